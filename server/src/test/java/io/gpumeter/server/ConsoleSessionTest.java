package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * The web console's server side over raw HTTP on a real server: its files (content types, CSP, no
 * listing, no traversal), sign-in with a key or the admin token (cookie attributes, errors), cookie
 * authentication of the customer and admin endpoints, the CSRF token on every state-changing
 * request the cookie authenticates, revocation and sign-out.
 */
@Timeout(300)
@ExtendWith(ConsoleTestServer.class)
class ConsoleSessionTest {
  private static final String TOKEN = ConsoleTestServer.TOKEN;
  private static GpumeterServer server;
  private static Client client;
  private static final HttpClient http =
      HttpClient.newBuilder()
          .version(HttpClient.Version.HTTP_1_1)
          .connectTimeout(Duration.ofSeconds(10))
          .build();

  @BeforeAll
  static void start() {
    server = ConsoleTestServer.server();
    client = new Client(server.port());
  }

  private static HttpRequest.Builder req(String path) {
    return HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + server.port() + path))
        .timeout(Duration.ofMinutes(2));
  }

  private static Reply send(HttpRequest r) throws Exception {
    return Reply.of(http.send(r, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8)));
  }

  private static Reply getFile(String path) throws Exception {
    return send(req(path).GET().build());
  }

  /** A signed-in browser: its cookie and CSRF token. */
  record Browser(String cookie, String csrf, JsonNode session, Reply reply) {
    Reply get(String path) throws Exception {
      return send(req(path).header("Cookie", cookie).GET().build());
    }

    Reply post(String path, String body, String csrfToken) throws Exception {
      HttpRequest.Builder b =
          req(path)
              .header("Cookie", cookie)
              .header("Content-Type", "application/json")
              .POST(HttpRequest.BodyPublishers.ofString(body));
      if (csrfToken != null) {
        b.header("X-CSRF-Token", csrfToken);
      }
      return send(b.build());
    }

    Reply delete(String path, String csrfToken) throws Exception {
      HttpRequest.Builder b = req(path).header("Cookie", cookie).DELETE();
      if (csrfToken != null) {
        b.header("X-CSRF-Token", csrfToken);
      }
      return send(b.build());
    }
  }

  private static Reply signInReply(String body) throws Exception {
    return send(
        req("/console/session")
            .header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(body))
            .build());
  }

  private static Browser signIn(String body) throws Exception {
    Reply r = signInReply(body);
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    String setCookie = r.header("set-cookie");
    assertThat(setCookie).as("Set-Cookie").isNotNull();
    String cookie = setCookie.substring(0, setCookie.indexOf(';'));
    return new Browser(cookie, r.json().get("csrf_token").asText(), r.json(), r);
  }

  private static Browser keySignIn(String key) throws Exception {
    return signIn("{\"api_key\":\"" + key + "\"}");
  }

  private static Browser operatorSignIn() throws Exception {
    return signIn("{\"admin_token\":\"" + TOKEN + "\"}");
  }

  private static void assertError(Reply r, int status, String code) {
    assertThat(r.status()).as(r.toString()).isEqualTo(status);
    assertThat(r.json()).as(r.toString()).isNotNull();
    assertThat(r.json().get("error").get("code").asText()).as(r.toString()).isEqualTo(code);
    assertThat(r.json().get("error").get("message").asText()).isNotBlank();
  }

  private static String usagePath() {
    long now = Instant.now().getEpochSecond();
    return UsageCompletionsEndpoint.PATH + "?bucket_width=1h&start_time=" + (now - 7200);
  }

  private static long requests(CreatedApiKey key) {
    return server
        .billing()
        .usage()
        .usage(key.keyId(), Instant.EPOCH, Instant.now().plusSeconds(3600))
        .totals()
        .requests();
  }

  private static final String COMPLETION =
      "{\"model\":\"demo-byte-lm\",\"prompt\":\"Console\",\"max_tokens\":2}";

  @Test
  void theConsoleIsServedWithAStrictPolicyAndNoListing() throws Exception {
    Reply redirect = getFile("/console");
    assertThat(redirect.status()).isEqualTo(308);
    assertThat(redirect.header("location")).isEqualTo("/console/");

    Reply index = getFile("/console/");
    assertThat(index.status()).as(index.toString()).isEqualTo(200);
    assertThat(index.header("content-type")).isEqualTo("text/html; charset=utf-8");
    assertThat(index.header("cache-control")).isEqualTo("no-cache");
    assertThat(index.header("x-content-type-options")).isEqualTo("nosniff");
    String csp = index.header("content-security-policy");
    assertThat(csp)
        .contains("default-src 'none'", "script-src 'self'", "connect-src 'self'")
        .contains("frame-ancestors 'none'")
        .doesNotContain("unsafe-inline", "unsafe-eval", "http:", "https:", "*");
    assertThat(getFile("/console/index.html").raw().body()).isEqualTo(index.raw().body());

    // Every file the page names is on this server, and served with its type.
    String html = index.raw().body();
    assertThat(html).doesNotContainPattern("(src|href)=\"(https?:)?//").doesNotContain("<style");
    Matcher m = Pattern.compile("(?:src|href)=\"(/console/assets/[^\"]+)\"").matcher(html);
    Set<String> types = new HashSet<>();
    while (m.find()) {
      Reply asset = getFile(m.group(1));
      assertThat(asset.status()).as(m.group(1)).isEqualTo(200);
      assertThat(asset.header("cache-control")).contains("immutable");
      assertThat(asset.header("content-security-policy")).isEqualTo(csp);
      types.add(asset.header("content-type"));
    }
    assertThat(types)
        .containsExactlyInAnyOrder("text/javascript; charset=utf-8", "text/css; charset=utf-8");
    // Inline <script> blocks would be refused by the policy: there are none.
    assertThat(html).doesNotContainPattern("<script(?![^>]*\\bsrc=)[^>]*>");

    for (String notAFile :
        List.of(
            "/console/assets",
            "/console/assets/",
            "/console/nothing.js",
            "/console/%2e%2e/pom.xml",
            "/console/..%2fpom.xml",
            "/console/assets/../index.html",
            "/console/.vite/manifest.json",
            "/console/io/gpumeter/server/Main.class",
            "/console//index.html",
            "/console/index.html%00.js")) {
      assertError(getFile(notAFile), 404, "unknown_url");
    }
    Reply post = send(req("/console/").POST(HttpRequest.BodyPublishers.ofString("x")).build());
    assertError(post, 405, "method_not_allowed");
  }

  @Test
  void aKeySessionIsAnHttpOnlyStrictCookieThatReadsUsageAndNeedsCsrfToChangeState()
      throws Exception {
    CreatedApiKey key = server.billing().apiKeys().create("console-acme");
    Browser b = keySignIn(key.plaintext());
    String setCookie = b.reply().header("set-cookie");
    assertThat(setCookie)
        .startsWith(ConsoleSessions.COOKIE + "=")
        .contains("; HTTPOnly", "; SameSite=Strict", "; Path=/", "; Max-Age=28800")
        .doesNotContain("Secure");
    String id = b.cookie().substring(b.cookie().indexOf('=') + 1);
    assertThat(id).matches("[A-Za-z0-9_-]{43}");
    assertThat(b.session().get("kind").asText()).isEqualTo("key");
    assertThat(b.session().get("account").asText()).isEqualTo("console-acme");
    assertThat(b.session().get("api_key_id").asText()).isEqualTo(Long.toString(key.keyId()));
    assertThat(b.session().get("csrf_token").asText())
        .matches("[A-Za-z0-9_-]{43}")
        .isNotEqualTo(id);
    assertThat(b.reply().raw().body()).doesNotContain(key.plaintext());
    assertThat(b.reply().header("cache-control")).isEqualTo("no-store");

    // A second sign-in is another session with another CSRF token.
    Browser b2 = keySignIn(key.plaintext());
    assertThat(b2.cookie()).isNotEqualTo(b.cookie());
    assertThat(b2.csrf()).isNotEqualTo(b.csrf());

    // The cookie authenticates the customer endpoints.
    Reply usage = b.get(usagePath());
    assertThat(usage.status()).as(usage.toString()).isEqualTo(200);
    assertThat(b.get("/v1/models").status()).isEqualTo(200);
    Reply current = b.get("/console/session");
    assertThat(current.status()).as(current.toString()).isEqualTo(200);
    assertThat(current.json().get("csrf_token").asText()).isEqualTo(b.csrf());

    // A state-changing request needs the session's CSRF token, and is refused before it runs.
    long before = requests(key);
    assertError(b.post("/v1/completions", COMPLETION, null), 403, "csrf_token_invalid");
    assertError(b.post("/v1/completions", COMPLETION, b2.csrf()), 403, "csrf_token_invalid");
    assertError(b.post("/v1/completions", COMPLETION, ""), 403, "csrf_token_invalid");
    assertThat(requests(key)).isEqualTo(before);
    Reply ok = b.post("/v1/completions", COMPLETION, b.csrf());
    assertThat(ok.status()).as(ok.toString()).isEqualTo(200);

    // An Authorization header wins over the cookie.
    Reply header =
        send(
            req("/v1/models")
                .header("Cookie", b.cookie())
                .header("Authorization", "Bearer gm_" + "x".repeat(40))
                .GET()
                .build());
    assertError(header, 401, "invalid_api_key");
    // With a bearer key, no CSRF token is asked for even if a cookie is sent.
    Reply bearer =
        send(
            req("/v1/completions")
                .header("Cookie", b.cookie())
                .header("Authorization", "Bearer " + key.plaintext())
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(COMPLETION))
                .build());
    assertThat(bearer.status()).as(bearer.toString()).isEqualTo(200);

    // A key session is not an operator.
    assertError(b.get("/admin/keys?account=console-acme"), 401, "not_operator_session");

    // Sign-out needs the token, then the cookie is dead and cleared.
    assertError(b.delete("/console/session", null), 403, "csrf_token_invalid");
    Reply out = b.delete("/console/session", b.csrf());
    assertThat(out.status()).as(out.toString()).isEqualTo(200);
    assertThat(out.header("set-cookie")).contains(ConsoleSessions.COOKIE + "=;", "Max-Age=0");
    assertError(b.get(usagePath()), 401, "session_expired");
    assertError(b.get("/console/session"), 401, "session_expired");
    // the other session lives on
    assertThat(b2.get(usagePath()).status()).isEqualTo(200);
  }

  @Test
  void aRevokedKeyEndsItsConsoleSessionAtTheNextRequest() throws Exception {
    CreatedApiKey key = server.billing().apiKeys().create("console-revoked");
    Browser b = keySignIn(key.plaintext());
    assertThat(b.get(usagePath()).status()).isEqualTo(200);
    Browser op = operatorSignIn();
    Reply revoked = op.post("/admin/keys/" + key.keyId() + "/revoke", "", op.csrf());
    assertThat(revoked.status()).as(revoked.toString()).isEqualTo(200);
    assertError(b.get(usagePath()), 401, "invalid_api_key");
    assertError(b.get("/console/session"), 401, "invalid_api_key");
    assertError(keySignInReply(key.plaintext()), 401, "invalid_api_key");
  }

  private static Reply keySignInReply(String key) throws Exception {
    return signInReply("{\"api_key\":\"" + key + "\"}");
  }

  @Test
  void anOperatorSessionUsesTheAdminApiWithCsrfOnEveryChange() throws Exception {
    Browser op = operatorSignIn();
    assertThat(op.session().get("kind").asText()).isEqualTo("operator");
    assertThat(op.session().has("account")).isFalse();
    assertThat(op.reply().raw().body()).doesNotContain(TOKEN);

    Reply empty = op.get("/admin/keys?account=console-ops");
    assertThat(empty.status()).as(empty.toString()).isEqualTo(200);
    assertThat(empty.json().get("data")).isEmpty();
    assertError(
        op.post("/admin/keys", "{\"account\":\"console-ops\"}", null), 403, "csrf_token_invalid");
    assertError(
        op.post("/admin/keys", "{\"account\":\"console-ops\"}", "forged"),
        403,
        "csrf_token_invalid");
    assertThat(op.get("/admin/keys?account=console-ops").json().get("data")).isEmpty();
    Reply created = op.post("/admin/keys", "{\"account\":\"console-ops\"}", op.csrf());
    assertThat(created.status()).as(created.toString()).isEqualTo(201);
    String secret = created.json().get("key").asText();
    long id = created.json().get("id").asLong();
    assertThat(client.get("/v1/models", secret).status()).isEqualTo(200);

    assertError(op.post("/admin/keys/" + id + "/revoke", "", null), 403, "csrf_token_invalid");
    assertThat(client.get("/v1/models", secret).status()).isEqualTo(200);
    assertThat(op.post("/admin/keys/" + id + "/revoke", "", op.csrf()).status()).isEqualTo(200);
    assertError(client.get("/v1/models", secret), 401, "invalid_api_key");

    // An operator session is not a customer.
    assertError(op.get(usagePath()), 401, "operator_session");
    // The bearer admin token still works and ignores the cookie.
    assertThat(client.get("/admin/keys?account=console-ops", TOKEN).status()).isEqualTo(200);

    assertThat(op.delete("/console/session", op.csrf()).status()).isEqualTo(200);
    assertError(op.get("/admin/keys?account=console-ops"), 401, "session_expired");
  }

  @Test
  void badSignInsAreRefusedAndSetNoCookie() throws Exception {
    CreatedApiKey key = server.billing().apiKeys().create("console-bad");
    List<Object[]> cases =
        List.of(
            new Object[] {"{\"api_key\":\"gm_" + "y".repeat(40) + "\"}", 401, "invalid_api_key"},
            new Object[] {"{\"api_key\":\"nonsense\"}", 401, "invalid_api_key"},
            new Object[] {
              "{\"admin_token\":\"wrong-token-0123456789\"}", 401, "invalid_admin_token"
            },
            new Object[] {
              "{\"api_key\":\"" + key.plaintext() + "\",\"admin_token\":\"" + TOKEN + "\"}",
              400,
              "invalid_value"
            },
            new Object[] {"{}", 400, "invalid_value"},
            new Object[] {"{\"api_key\":42}", 400, "invalid_type"},
            new Object[] {"{\"api_key\":\"\"}", 400, "invalid_type"},
            new Object[] {"{\"user\":\"x\"}", 400, "invalid_value"},
            new Object[] {"[1]", 400, "invalid_json"},
            new Object[] {"{", 400, "invalid_json"});
    for (Object[] c : cases) {
      Reply r = signInReply((String) c[0]);
      assertError(r, (Integer) c[1], (String) c[2]);
      assertThat(r.header("set-cookie")).as((String) c[0]).isNull();
    }
    // A form post (what a cross-site page can send without a preflight) is refused.
    Reply form =
        send(
            req("/console/session")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .POST(HttpRequest.BodyPublishers.ofString("api_key=" + key.plaintext()))
                .build());
    assertError(form, 415, "unsupported_media_type");
    assertThat(form.header("set-cookie")).isNull();
    assertError(
        send(req("/console/session").PUT(HttpRequest.BodyPublishers.ofString("{}")).build()),
        405,
        "method_not_allowed");
    // An unknown cookie is no session.
    Browser ghost = new Browser(ConsoleSessions.COOKIE + "=" + "A".repeat(43), "x", null, null);
    assertError(ghost.get(usagePath()), 401, "session_expired");
    assertError(ghost.get("/admin/keys"), 401, "session_expired");
    assertError(ghost.get("/console/session"), 401, "session_expired");
    // The server still serves.
    assertThat(keySignIn(key.plaintext()).get(usagePath()).status()).isEqualTo(200);
  }

  @Test
  void behindAnHttpsProxyTheCookieIsSecure() throws Exception {
    CreatedApiKey key = server.billing().apiKeys().create("console-tls");
    Reply r =
        send(
            req("/console/session")
                .header("Content-Type", "application/json")
                .header("X-Forwarded-Proto", "https")
                .POST(
                    HttpRequest.BodyPublishers.ofString(
                        "{\"api_key\":\"" + key.plaintext() + "\"}"))
                .build());
    assertThat(r.status()).isEqualTo(200);
    assertThat(r.header("set-cookie")).contains("; Secure", "; HTTPOnly", "; SameSite=Strict");
  }
}
