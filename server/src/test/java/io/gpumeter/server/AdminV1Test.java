package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.db.Database;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.net.http.HttpRequest;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.Timestamp;
import java.time.Duration;
import java.time.Instant;
import java.time.YearMonth;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.yaml.snakeyaml.Yaml;

/**
 * The operator API {@code /admin/v1} of a real server with its embedded PostgreSQL: the whole
 * operator flow over HTTP (account, labelled key, price, plan, credit, completions, balance,
 * invoices in three formats, verify, finalize, revoke), each bad input's error with nothing
 * changed, and the OpenAPI document against the routes the server serves.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class AdminV1Test {
  private static final String TOKEN = "admin-token-for-v1-tests-0123";
  private static final String V1 = "/admin/v1";

  private static GpumeterServer server;
  private static Client client;
  private static Database db;

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            TestServers.config("admin-v1").set("admin.token", TOKEN).build(), StepListener.NONE);
    client = new Client(server.port());
    db = Database.start(server.config().toolDatabaseConfig());
  }

  @AfterAll
  static void stop() {
    if (db != null) {
      db.close();
    }
    if (server != null) {
      server.close();
    }
  }

  private static Reply get(String path) throws Exception {
    return client.get(V1 + path, TOKEN);
  }

  private static Reply post(String path, String body) throws Exception {
    return client.post(V1 + path, TOKEN, body);
  }

  private static JsonNode ok(Reply r, int status) {
    assertThat(r.status()).as(r.toString()).isEqualTo(status);
    return r.json();
  }

  private static void assertError(Reply r, int status, String code) {
    assertThat(r.status()).as(r.toString()).isEqualTo(status);
    assertThat(r.json()).as(r.toString()).isNotNull();
    JsonNode e = r.json().get("error");
    assertThat(e.get("code").asText()).as(r.toString()).isEqualTo(code);
    assertThat(e.get("message").asText()).isNotBlank();
    assertThat(e.has("type")).isTrue();
    assertThat(e.has("param")).isTrue();
  }

  private static long unix(Instant t) {
    return t.getEpochSecond();
  }

  @Test
  @Order(1)
  void theOperatorFlowWorksEndToEndOverHttp() throws Exception {
    Instant now = Instant.now();
    long longAgo = unix(now.minus(Duration.ofDays(70)));

    JsonNode account = ok(post("/accounts", "{\"name\":\"acme\",\"currency\":\"USD\"}"), 201);
    assertThat(account.get("object").asText()).isEqualTo("account");
    assertThat(account.get("status").asText()).isEqualTo("active");
    assertThat(account.get("postpaid_allowed").asBoolean()).isFalse();
    assertThat(account.get("created_at").isIntegralNumber()).isTrue();
    assertThat(ok(get("/accounts"), 200).get("data").findValuesAsText("name")).contains("acme");

    JsonNode key =
        ok(
            post(
                "/keys",
                "{\"account\":\"acme\",\"label\":\" ci runner \",\"scope\":\"account_admin\"}"),
            201);
    String secret = key.get("key").asText();
    long keyId = key.get("id").asLong();
    assertThat(key.get("label").asText()).isEqualTo("ci runner");
    assertThat(key.get("scope").asText()).isEqualTo("account_admin");
    assertThat(key.get("revoked_at").isNull()).isTrue();
    JsonNode listed = ok(get("/keys?account=acme"), 200).get("data");
    assertThat(listed).hasSize(1);
    assertThat(listed.get(0).get("label").asText()).isEqualTo("ci runner");
    assertThat(listed.get(0).has("key")).isFalse();

    JsonNode price =
        ok(
            post(
                "/prices",
                "{\"model\":\"*\",\"device_class\":\"cpu\",\"micros_per_device_second\":1000000,"
                    + "\"effective_from\":"
                    + longAgo
                    + "}"),
            201);
    assertThat(price.get("micros_per_device_second").asLong()).isEqualTo(1_000_000);
    assertThat(price.get("per_device_second").asText()).isEqualTo("1.000000");
    assertThat(price.get("currency").asText()).isEqualTo("USD");
    assertThat(price.get("effective_to").isNull()).isTrue();

    JsonNode plan =
        ok(post("/plans", "{\"name\":\"starter\",\"included_device_ns\":1000000}"), 201);
    assertThat(plan.get("included_device_ns").asLong()).isEqualTo(1_000_000);
    assertThat(ok(get("/plans"), 200).get("data").findValuesAsText("name")).contains("starter");
    JsonNode sub =
        ok(
            post(
                "/accounts/acme/plan", "{\"plan\":\"starter\",\"effective_from\":" + longAgo + "}"),
            200);
    assertThat(sub.get("object").asText()).isEqualTo("subscription");
    assertThat(sub.get("effective_from").asLong()).isEqualTo(longAgo);

    JsonNode credit =
        ok(
            post(
                "/accounts/acme/credits",
                "{\"kind\":\"grant\",\"amount_micros\":50000000,\"expires_at\":"
                    + unix(now.plus(Duration.ofDays(30)))
                    + ",\"note\":\"welcome\"}"),
            201);
    assertThat(credit.get("granted_micros").asLong()).isEqualTo(50_000_000);
    assertThat(credit.get("remaining_micros").asLong()).isEqualTo(50_000_000);
    assertThat(credit.get("granted").asText()).isEqualTo("50.000000");

    // usage of last month, written as the ledger writes it (the V7 trigger prices and deducts)
    Instant lastMonth =
        YearMonth.from(now.atZone(ZoneOffset.UTC))
            .atDay(1)
            .atStartOfDay()
            .toInstant(ZoneOffset.UTC)
            .minus(Duration.ofDays(1));
    insertUsage(
        "admin-v1-last-month", keyId, account.get("id").asLong(), lastMonth, 2_000_000_000L);

    for (int i = 0; i < 3; i++) {
      Reply r =
          client.post(
              "/v1/completions",
              secret,
              "{\"model\":\"demo-byte-lm\",\"prompt\":\"Hello " + i + "\",\"max_tokens\":3}");
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
    }
    String current =
        "inv_" + account.get("id").asLong() + "_" + YearMonth.from(now.atZone(ZoneOffset.UTC));
    String previous =
        "inv_"
            + account.get("id").asLong()
            + "_"
            + YearMonth.from(lastMonth.atZone(ZoneOffset.UTC));
    await()
        .atMost(Duration.ofSeconds(60))
        .pollInterval(Duration.ofMillis(200))
        .until(
            () -> {
              Reply r = get("/invoices/" + current); // 404 until the first charge is stored
              return r.status() == 200 && requests(r.json()) == 3;
            });

    JsonNode balance = ok(get("/accounts/acme/balance"), 200);
    assertThat(balance.get("object").asText()).isEqualTo("balance");
    assertThat(balance.get("currency").asText()).isEqualTo("USD");
    assertThat(balance.get("credit_remaining_micros").asLong()).isLessThan(50_000_000);
    assertThat(balance.get("allowance_included_device_ns").asLong()).isEqualTo(1_000_000);
    assertThat(balance.get("allowance_used_device_ns").asLong()).isPositive();
    JsonNode credits = ok(get("/accounts/acme/credits"), 200).get("data");
    assertThat(credits).hasSize(1);
    assertThat(credits.get(0).get("remaining_micros").asLong())
        .isEqualTo(balance.get("credit_remaining_micros").asLong());

    JsonNode invoices = ok(get("/accounts/acme/invoices"), 200).get("data");
    assertThat(invoices.findValuesAsText("id")).containsExactly(previous, current);
    long creditsApplied = 0;
    for (JsonNode inv : invoices) {
      assertThat(inv.get("status").asText()).isEqualTo("draft");
      for (JsonNode line : inv.get("lines")) {
        creditsApplied += line.get("credits_micros").asLong();
      }
    }
    assertThat(creditsApplied).isPositive();
    JsonNode last = ok(get("/invoices/" + previous), 200);
    assertThat(requests(last)).isEqualTo(1);
    JsonNode line = last.get("lines").get(0);
    assertThat(line.get("device_ns").asLong()).isEqualTo(2_000_000_000L);
    assertThat(line.get("included_ns").asLong()).as(line.toString()).isEqualTo(1_000_000L);
    assertThat(line.get("billable_ns").asLong()).as(line.toString()).isEqualTo(1_999_000_000L);
    assertThat(line.get("unit_price_micros_per_device_second").asLong()).isEqualTo(1_000_000L);

    Reply csv = get("/invoices/" + current + "?format=csv");
    assertThat(csv.status()).as(csv.toString()).isEqualTo(200);
    assertThat(csv.header("content-type")).startsWith("text/csv");
    assertThat(csv.raw().body()).startsWith("account,period,currency,").contains("acme");
    Reply html = get("/invoices/" + current + "?format=html");
    assertThat(html.status()).as(html.toString()).isEqualTo(200);
    assertThat(html.header("content-type")).startsWith("text/html");
    assertThat(html.raw().body()).startsWith("<!DOCTYPE html>").contains("acme");

    for (String id : List.of(previous, current)) {
      JsonNode v = ok(get("/invoices/" + id + "/verify"), 200);
      assertThat(v.get("ok").asBoolean()).as(v.toString()).isTrue();
      assertThat(v.get("problems")).isEmpty();
      assertThat(v.get("recomputed_total_micros").asLong())
          .isEqualTo(v.get("stated_total_micros").asLong());
    }

    JsonNode fin = ok(post("/invoices/" + previous + "/finalize", ""), 200);
    assertThat(fin.get("status").asText()).isEqualTo("final");
    assertThat(fin.get("id").asText()).isEqualTo(previous);
    assertThat(fin.get("total_micros").asLong()).isEqualTo(last.get("total_micros").asLong());
    assertThat(ok(get("/invoices/" + previous), 200).get("status").asText()).isEqualTo("final");
    assertThat(ok(get("/invoices/" + previous + "/verify"), 200).get("ok").asBoolean()).isTrue();
    assertError(post("/invoices/" + previous + "/finalize", ""), 409, "conflict");
    assertError(post("/invoices/" + current + "/finalize", ""), 400, "invalid_value");
    assertThat(ok(get("/invoices/" + current), 200).get("status").asText()).isEqualTo("draft");

    JsonNode suspended = ok(post("/accounts/acme/suspend", ""), 200);
    assertThat(suspended.get("status").asText()).isEqualTo("suspended");
    assertThat(ok(get("/accounts/acme"), 200).get("status").asText()).isEqualTo("suspended");
    assertThat(ok(post("/accounts/acme/resume", ""), 200).get("status").asText())
        .isEqualTo("active");

    JsonNode revoked = ok(post("/keys/" + keyId + "/revoke", ""), 200);
    assertThat(revoked.get("revoked_at").isIntegralNumber()).isTrue();
    assertThat(revoked.get("label").asText()).isEqualTo("ci runner");
    Reply refused =
        client.post(
            "/v1/completions",
            secret,
            "{\"model\":\"demo-byte-lm\",\"prompt\":\"x\",\"max_tokens\":1}");
    assertError(refused, 401, "invalid_api_key");
    assertError(post("/keys/" + keyId + "/revoke", ""), 409, "api_key_revoked");
  }

  private static long requests(JsonNode invoice) {
    long n = 0;
    for (JsonNode line : invoice.get("lines")) {
      n += line.get("requests").asLong();
    }
    return n;
  }

  private static void insertUsage(
      String requestId, long keyId, long accountId, Instant finishedAt, long deviceNs)
      throws Exception {
    try (Connection c = db.maintenanceDataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "INSERT INTO usage_records (request_id, api_key_id, account_id, model, device,"
                    + " device_name, device_uuid, timer_kind, driver_version, cuda_version,"
                    + " weight_policy, device_ns, prefill_ns, decode_ns, prompt_tokens,"
                    + " completion_tokens, queue_ns, steps, status, started_at, finished_at)"
                    + " VALUES (?, ?, ?, 'demo-byte-lm', 'cpu', 'cpu', '', 'test', '', '', 'test',"
                    + " ?, ?, 0, 1, 1, 0, 1, 'ok', ?, ?)")) {
      ps.setString(1, requestId);
      ps.setLong(2, keyId);
      ps.setLong(3, accountId);
      ps.setLong(4, deviceNs);
      ps.setLong(5, deviceNs);
      ps.setTimestamp(6, Timestamp.from(finishedAt.minusSeconds(3)));
      ps.setTimestamp(7, Timestamp.from(finishedAt));
      ps.executeUpdate();
    }
  }

  /** What every list of the API shows now: a bad request must leave all of it as it was. */
  private static Map<String, String> state() throws Exception {
    Map<String, String> s = new java.util.LinkedHashMap<>();
    for (String path :
        List.of(
            "/accounts",
            "/keys",
            "/prices",
            "/plans",
            "/accounts/beta/credits",
            "/accounts/beta/balance",
            "/accounts/beta/invoices")) {
      Reply r = get(path);
      assertThat(r.status()).as(path + " " + r).isEqualTo(200);
      s.put(path, r.raw().body());
    }
    return s;
  }

  @Test
  @Order(2)
  void badInputGetsClearErrorsAndChangesNothing() throws Exception {
    Instant now = Instant.now();
    ok(
        post("/accounts", "{\"name\":\"beta\",\"currency\":\"EUR\",\"postpaid_allowed\":true}"),
        201);
    ok(
        post(
            "/prices",
            "{\"model\":\"m-closed\",\"device_class\":\"cpu\",\"currency\":\"EUR\","
                + "\"micros_per_device_second\":5,\"effective_from\":"
                + unix(now.minus(Duration.ofDays(10)))
                + ",\"effective_to\":"
                + unix(now.minus(Duration.ofDays(5)))
                + "}"),
        201);
    ok(post("/plans", "{\"name\":\"gold\",\"included_device_ns\":5}"), 201);
    Map<String, String> before = state();

    // negative price, overlapping price versions, unknown currency (price and account)
    assertError(
        post(
            "/prices",
            "{\"model\":\"m\",\"device_class\":\"cpu\",\"micros_per_device_second\":-1}"),
        400,
        "invalid_value");
    assertError(
        post(
            "/prices",
            "{\"model\":\"m-closed\",\"device_class\":\"cpu\",\"currency\":\"EUR\","
                + "\"micros_per_device_second\":7,\"effective_from\":"
                + unix(now.minus(Duration.ofDays(7)))
                + ",\"effective_to\":"
                + unix(now.minus(Duration.ofDays(6)))
                + "}"),
        409,
        "conflict");
    assertError(
        post(
            "/prices",
            "{\"model\":\"m\",\"device_class\":\"cpu\",\"currency\":\"XYZ\","
                + "\"micros_per_device_second\":1}"),
        400,
        "invalid_value");
    assertError(
        post("/accounts", "{\"name\":\"gamma\",\"currency\":\"XYZ\"}"), 400, "invalid_value");
    assertError(post("/accounts", "{\"name\":\"gamma\"}"), 400, "missing_required_parameter");
    assertError(post("/accounts", "{\"name\":\"beta\",\"currency\":\"EUR\"}"), 409, "conflict");
    assertError(
        post(
            "/prices",
            "{\"model\":\"m\",\"device_class\":\"Bad Class\",\"micros_per_device_second\":1}"),
        400,
        "invalid_value");

    // a plan for a missing account, a missing plan, a plan name taken
    Reply noAccount = post("/accounts/nobody/plan", "{\"plan\":\"gold\"}");
    assertError(noAccount, 404, "account_not_found");
    assertThat(noAccount.json().get("error").get("param").asText()).isEqualTo("account");
    assertError(post("/accounts/beta/plan", "{\"plan\":\"platinum\"}"), 404, "plan_not_found");
    assertError(post("/plans", "{\"name\":\"gold\",\"included_device_ns\":1}"), 409, "conflict");
    assertError(
        post("/plans", "{\"name\":\"neg\",\"included_device_ns\":-1}"), 400, "invalid_value");

    // credits: expiry in the past, bad kind, zero, a fraction, a missing account
    assertError(
        post(
            "/accounts/beta/credits",
            "{\"kind\":\"grant\",\"amount_micros\":10,\"expires_at\":"
                + unix(now.minus(Duration.ofMinutes(1)))
                + "}"),
        400,
        "invalid_value");
    assertError(
        post("/accounts/beta/credits", "{\"kind\":\"gift\",\"amount_micros\":10}"),
        400,
        "invalid_value");
    assertError(
        post("/accounts/beta/credits", "{\"kind\":\"topup\",\"amount_micros\":0}"),
        400,
        "invalid_value");
    assertError(
        post("/accounts/beta/credits", "{\"kind\":\"topup\",\"amount_micros\":1.5}"),
        400,
        "invalid_type");
    assertError(
        post("/accounts/nobody/credits", "{\"kind\":\"topup\",\"amount_micros\":10}"),
        404,
        "account_not_found");

    // unknown account, key, invoice; malformed ids
    assertError(get("/accounts/nobody"), 404, "account_not_found");
    assertError(get("/accounts/nobody/balance"), 404, "account_not_found");
    assertError(get("/accounts/nobody/invoices"), 404, "account_not_found");
    assertError(post("/accounts/nobody/suspend", ""), 404, "account_not_found");
    assertError(get("/keys?account=nobody"), 404, "account_not_found");
    assertError(post("/keys", "{\"account\":\"nobody\"}"), 404, "account_not_found");
    assertError(post("/keys/999999999/revoke", ""), 404, "api_key_not_found");
    assertError(post("/keys/abc/revoke", ""), 400, "invalid_value");
    assertError(get("/invoices/inv_999999_2026-01"), 404, "invoice_not_found");
    assertError(get("/invoices/inv_1_1999-01"), 404, "invoice_not_found");
    assertError(post("/invoices/inv_999999_2026-01/finalize", ""), 404, "invoice_not_found");
    assertError(get("/invoices/inv_999999_2026-01/verify"), 404, "invoice_not_found");
    assertError(get("/invoices/invoice-7"), 400, "invalid_value");

    // key labels and scopes
    assertError(
        post("/keys", "{\"account\":\"beta\",\"label\":\"" + "x".repeat(201) + "\"}"),
        400,
        "invalid_value");
    assertError(
        post("/keys", "{\"account\":\"beta\",\"label\":\"tab\\there\"}"), 400, "invalid_value");
    assertError(post("/keys", "{\"account\":\"beta\",\"label\":\"   \"}"), 400, "invalid_value");
    assertError(post("/keys", "{\"account\":\"beta\",\"scope\":\"root\"}"), 400, "invalid_value");
    assertError(post("/keys", "{\"account\":\"beta\",\"label\":7}"), 400, "invalid_type");

    // bad JSON, unknown fields, wrong types
    assertError(post("/accounts", "{"), 400, "invalid_json");
    assertError(post("/accounts", "[1]"), 400, "invalid_json");
    assertError(
        post("/plans", "{\"name\":\"p\",\"included_device_ns\":1,\"x\":1}"), 400, "invalid_value");
    assertError(
        post("/accounts", "{\"name\":\"g\",\"currency\":\"USD\",\"postpaid_allowed\":\"yes\"}"),
        400,
        "invalid_type");
    assertError(
        post("/accounts/beta/plan", "{\"plan\":\"gold\",\"effective_from\":-5}"),
        400,
        "invalid_value");

    // routing and authentication
    assertError(get("/nothing-here"), 404, "unknown_url");
    Reply wrong = client.send(client.request(V1 + "/accounts", TOKEN).DELETE().build());
    assertError(wrong, 405, "method_not_allowed");
    assertThat(wrong.header("allow")).isEqualTo("GET, POST");
    assertError(client.get(V1 + "/accounts", null), 401, "missing_admin_token");
    assertError(
        client.post(V1 + "/accounts", "wrong-token", "{\"name\":\"x\",\"currency\":\"USD\"}"),
        401,
        "invalid_admin_token");
    assertError(client.get(V1 + "/accounts", "gm_" + "A".repeat(40)), 401, "invalid_admin_token");

    assertThat(state()).isEqualTo(before);
  }

  /**
   * The document in the repository lists exactly the routes the server has, every one of them is
   * answered by the running server (not 404 unknown_url or 405), and the server serves the document
   * itself.
   */
  @Test
  @Order(3)
  void openApiDocumentMatchesTheServedRoutes() throws Exception {
    Path file = TestServers.repoRoot().resolve("docs/openapi/admin-v1.yaml");
    String text = Files.readString(file, StandardCharsets.UTF_8);
    Map<String, Object> doc = new Yaml().load(text);
    assertThat(String.valueOf(doc.get("openapi"))).startsWith("3.0");
    @SuppressWarnings("unchecked")
    Map<String, Map<String, Object>> paths = (Map<String, Map<String, Object>>) doc.get("paths");
    Set<String> documented = new TreeSet<>();
    Set<String> methods = Set.of("get", "post", "put", "patch", "delete", "head", "options");
    for (Map.Entry<String, Map<String, Object>> p : paths.entrySet()) {
      for (String m : p.getValue().keySet()) {
        if (methods.contains(m)) {
          documented.add(m.toUpperCase(java.util.Locale.ROOT) + " " + p.getKey());
        }
      }
    }
    Set<String> routed = new TreeSet<>();
    for (AdminV1Endpoint.Route r : AdminV1Endpoint.ROUTES) {
      routed.add(r.method().name() + " " + r.template());
    }
    assertThat(documented).isEqualTo(routed);

    List<String> unserved = new ArrayList<>();
    for (String route : documented) {
      String method = route.substring(0, route.indexOf(' '));
      String path =
          route
              .substring(route.indexOf(' ') + 1)
              .replace("{name}", "no-such-account")
              .replace("{id}", "inv_999999_2000-01");
      if (path.contains("/keys/")) {
        path = path.replace("inv_999999_2000-01", "999999999");
      }
      HttpRequest.Builder b = client.request(path, TOKEN);
      Reply r =
          client.send(
              method.equals("GET")
                  ? b.GET().build()
                  : b.header("Content-Type", "application/json")
                      .POST(HttpRequest.BodyPublishers.ofString("{}"))
                      .build());
      String code = r.json() == null ? "" : r.json().path("error").path("code").asText();
      if (code.equals("unknown_url") || code.equals("method_not_allowed")) {
        unserved.add(route + " -> " + r);
      }
    }
    assertThat(unserved).as("documented but not served").isEmpty();

    Reply served = get("/openapi.yaml");
    assertThat(served.status()).isEqualTo(200);
    assertThat(served.header("content-type")).startsWith("application/yaml");
    assertThat(served.raw().body()).isEqualTo(text);
  }
}
