package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.keys.ApiKeys;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.net.http.HttpRequest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;

/**
 * API keys through the admin API of a real server: list, create, revoke, rotate, their errors; a
 * revocation refuses the key from the next request on (measured, under 1 s, with a cache TTL of 60
 * s so only the invalidation can explain it); and the per-address throttle of failed
 * authentications (first, on a fresh server, so the counts are exact).
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class KeyAdminTest {
  private static final String TOKEN = "admin-token-for-key-tests-0123";
  private static final int MAX_FAILURES = 5;
  private static final Duration FAILURE_WINDOW = Duration.ofSeconds(3);

  private static GpumeterServer server;
  private static Client client;

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            TestServers.config("keys")
                .set("admin.token", TOKEN)
                .set("auth.key_cache_ttl", "60s")
                .set("auth.max_failures", Integer.toString(MAX_FAILURES))
                .set("auth.failure_window", FAILURE_WINDOW.toSeconds() + "s")
                .build(),
            StepListener.NONE);
    client = new Client(server.port());
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  private static void assertError(Reply r, int status, String code) {
    assertThat(r.status()).as(r.toString()).isEqualTo(status);
    assertThat(r.json()).as(r.toString()).isNotNull();
    assertThat(r.json().get("error").get("code").asText()).as(r.toString()).isEqualTo(code);
    assertThat(r.json().get("error").get("message").asText()).isNotBlank();
  }

  private static Reply adminPost(String path, String body) throws Exception {
    return client.post(path, TOKEN, body);
  }

  @Test
  @Order(2)
  void createListRevokeAndRotateThroughTheAdminApi() throws Exception {
    Reply created = adminPost("/admin/keys", "{\"account\": \"admin-api\"}");
    assertThat(created.status()).as(created.toString()).isEqualTo(201);
    JsonNode c = created.json();
    String secret = c.get("key").asText();
    long id = c.get("id").asLong();
    assertThat(ApiKeys.isWellFormed(secret)).as(secret).isTrue();
    assertThat(c.get("object").asText()).isEqualTo("api_key");
    assertThat(c.get("prefix").asText()).isEqualTo(secret.substring(0, ApiKeys.PREFIX_LENGTH));
    assertThat(c.get("account").asText()).isEqualTo("admin-api");
    assertThat(c.get("revoked_at").isNull()).isTrue();
    assertThat(client.get("/v1/models", secret).status()).isEqualTo(200);

    Reply listed = client.get("/admin/keys?account=admin-api", TOKEN);
    assertThat(listed.status()).as(listed.toString()).isEqualTo(200);
    assertThat(listed.json().get("data")).hasSize(1);
    JsonNode entry = listed.json().get("data").get(0);
    assertThat(entry.get("id").asLong()).isEqualTo(id);
    assertThat(entry.get("created_at").asText()).isEqualTo(c.get("created_at").asText());
    assertThat(entry.has("key")).isFalse();
    assertThat(listed.raw().body()).doesNotContain(secret.substring(ApiKeys.PREFIX_LENGTH));

    Reply rotated = adminPost("/admin/keys/" + id + "/rotate", "");
    assertThat(rotated.status()).as(rotated.toString()).isEqualTo(200);
    String newSecret = rotated.json().get("created").get("key").asText();
    long newId = rotated.json().get("created").get("id").asLong();
    assertThat(rotated.json().get("revoked").get("id").asLong()).isEqualTo(id);
    assertThat(rotated.json().get("revoked").get("revoked_at").isNull()).isFalse();
    assertThat(rotated.json().get("created").get("account").asText()).isEqualTo("admin-api");
    assertError(client.get("/v1/models", secret), 401, "invalid_api_key");
    assertThat(client.get("/v1/models", newSecret).status()).isEqualTo(200);

    assertError(adminPost("/admin/keys/" + id + "/revoke", ""), 409, "api_key_revoked");
    assertError(adminPost("/admin/keys/" + id + "/rotate", ""), 409, "api_key_revoked");
    Reply revoked = adminPost("/admin/keys/" + newId + "/revoke", "");
    assertThat(revoked.status()).as(revoked.toString()).isEqualTo(200);
    assertThat(revoked.json().get("revoked_at").isNull()).isFalse();
    assertError(client.get("/v1/models", newSecret), 401, "invalid_api_key");

    Reply all = client.get("/admin/keys?account=admin-api", TOKEN);
    assertThat(all.json().get("data")).hasSize(2);
    assertThat(all.json().get("data").get(0).get("revoked_at").isNull()).isFalse();
    assertThat(all.json().get("data").get(1).get("revoked_at").isNull()).isFalse();
  }

  @Test
  @Order(3)
  void badRequestsGetOpenAiStyleErrors() throws Exception {
    assertError(adminPost("/admin/keys/999999999/revoke", ""), 404, "api_key_not_found");
    assertError(adminPost("/admin/keys/999999999/rotate", ""), 404, "api_key_not_found");
    assertError(adminPost("/admin/keys/abc/revoke", ""), 400, "invalid_value");
    assertError(adminPost("/admin/keys/1/frobnicate", ""), 404, "unknown_url");
    assertError(adminPost("/admin/keys", "{"), 400, "invalid_json");
    assertError(adminPost("/admin/keys", "{}"), 400, "missing_required_parameter");
    assertError(adminPost("/admin/keys", "{\"account\": 7}"), 400, "invalid_type");
    assertError(adminPost("/admin/keys", "{\"account\": \"  \"}"), 400, "invalid_value");
    assertError(adminPost("/admin/keys", "{\"account\": \"a\", \"x\": 1}"), 400, "invalid_value");
    assertError(client.get("/admin/keys?account=", TOKEN), 400, "invalid_value");
    Reply wrongMethod = client.send(client.request("/admin/keys", TOKEN).DELETE().build());
    assertError(wrongMethod, 405, "method_not_allowed");
    assertThat(wrongMethod.header("allow")).isEqualTo("GET, POST");
    assertError(client.get("/admin/keys/1/revoke", TOKEN), 405, "method_not_allowed");
  }

  @Test
  @Order(4)
  void aRevocationThroughTheAdminApiTakesEffectWithinOneSecond() throws Exception {
    CreatedApiKey key = server.billing().apiKeys().create("revoked-fast");
    assertThat(client.get("/v1/models", key.plaintext()).status()).isEqualTo(200); // cached 60 s
    long lookups = server.billing().apiKeys().databaseLookups();
    assertThat(client.get("/v1/models", key.plaintext()).status()).isEqualTo(200);
    assertThat(server.billing().apiKeys().databaseLookups())
        .as("the key is served from the cache")
        .isEqualTo(lookups);

    long start = System.nanoTime();
    Reply revoke = adminPost("/admin/keys/" + key.keyId() + "/revoke", "");
    Reply next = client.get("/v1/models", key.plaintext());
    long elapsed = System.nanoTime() - start;

    assertThat(revoke.status()).as(revoke.toString()).isEqualTo(200);
    assertError(next, 401, "invalid_api_key");
    assertThat(Duration.ofNanos(elapsed)).isLessThan(Duration.ofSeconds(1));
  }

  /** First, so that no earlier 401 of this address counts; it ends unthrottled. */
  @Test
  @Order(1)
  void failedAuthenticationsAreThrottledPerAddressBeforeAnyLookup() throws Exception {
    CreatedApiKey valid = server.billing().apiKeys().create("throttled");
    ApiKeys keys = server.billing().apiKeys();
    long before = keys.databaseLookups();
    // Distinct well-formed wrong keys: each one is a cache miss, so a database lookup.
    List<String> wrong = new ArrayList<>();
    for (int i = 0; i < MAX_FAILURES + 20; i++) {
      wrong.add("gm_" + String.format("%040d", i).replace('0', 'Q'));
    }
    for (int i = 0; i < MAX_FAILURES; i++) {
      assertError(client.get("/v1/models", wrong.get(i)), 401, "invalid_api_key");
    }
    assertThat(keys.databaseLookups() - before).isEqualTo(MAX_FAILURES);

    for (int i = MAX_FAILURES; i < wrong.size(); i++) {
      Reply r = client.get("/v1/models", wrong.get(i));
      assertError(r, 429, AuthThrottle.CODE);
      assertThat(r.json().get("error").get("type").asText()).isEqualTo("rate_limit_error");
      long retryAfter = Long.parseLong(r.header("retry-after"));
      assertThat(retryAfter).isBetween(1L, FAILURE_WINDOW.toSeconds());
    }
    // 20 more distinct wrong keys cost no lookup at all
    assertThat(keys.databaseLookups() - before).isEqualTo(MAX_FAILURES);
    // the address is throttled, whatever it presents (the admin API too)
    assertError(client.get("/v1/models", valid.plaintext()), 429, AuthThrottle.CODE);
    assertError(client.get("/v1/models", null), 429, AuthThrottle.CODE);
    assertError(client.get("/admin/keys", TOKEN), 429, AuthThrottle.CODE);
    // endpoints without authentication are not throttled
    assertThat(client.get("/healthz", null).status()).isEqualTo(200);

    // once the window is over, the address may authenticate again
    await()
        .atMost(FAILURE_WINDOW.plusSeconds(5))
        .pollInterval(Duration.ofMillis(200))
        .until(() -> client.get("/v1/models", valid.plaintext()).status() == 200);
    // and wrong admin tokens count as failures too
    for (int i = 0; i < MAX_FAILURES; i++) {
      assertError(
          client.send(client.request("/admin/keys", "wrong-admin-token").GET().build()),
          401,
          "invalid_admin_token");
    }
    assertError(client.get("/admin/keys", TOKEN), 429, AuthThrottle.CODE);
    HttpRequest probe = client.request("/v1/models", valid.plaintext()).GET().build();
    assertError(client.send(probe), 429, AuthThrottle.CODE);
    // leave the address unthrottled for the other tests
    await()
        .atMost(FAILURE_WINDOW.plusSeconds(5))
        .pollInterval(Duration.ofMillis(200))
        .until(() -> client.send(probe).status() == 200);
  }
}
