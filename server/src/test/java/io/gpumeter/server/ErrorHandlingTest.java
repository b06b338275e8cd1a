package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.StepListener;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.net.http.HttpRequest;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;

/**
 * Every kind of bad request against a real running server: the right status, OpenAI's error body
 * {@code {"error":{"message","type","param","code"}}}, and a server that goes on serving.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class ErrorHandlingTest {
  private static GpumeterServer server;
  private static Client client;
  private static String key;

  @BeforeAll
  static void start() throws Exception {
    // One sequence at a time and two waiting at most, so that a burst overflows the queue.
    server =
        GpumeterServer.start(
            TestServers.config("errors")
                .set("scheduler.max_running", "1")
                .set("scheduler.queue_capacity", "2")
                .build(),
            StepListener.NONE);
    client = new Client(server.port());
    key = server.billing().apiKeys().create("error-tests").plaintext();
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  private static Reply complete(String body) throws Exception {
    return client.post("/v1/completions", key, body);
  }

  /** Asserts the status and the error body; returns the error object. */
  private static JsonNode error(Reply r, int status, String type, String param, String code) {
    assertThat(r.status()).as(r.toString()).isEqualTo(status);
    assertThat(r.header("content-type")).isEqualTo("application/json");
    assertThat(r.json()).as(r.toString()).isNotNull();
    JsonNode e = r.json().get("error");
    assertThat(e).as(r.toString()).isNotNull();
    assertThat(r.json().size()).isEqualTo(1);
    assertThat(e.get("message").asText()).isNotBlank();
    assertThat(e.get("type").asText()).isEqualTo(type);
    if (param == null) {
      assertThat(e.get("param").isNull()).as("param of " + r).isTrue();
    } else {
      assertThat(e.get("param").asText()).isEqualTo(param);
    }
    if (code != null) {
      assertThat(e.get("code").asText()).isEqualTo(code);
    }
    assertThat(e.has("code")).isTrue();
    return e;
  }

  @Test
  @Order(1)
  void malformedJson() throws Exception {
    JsonNode e =
        error(
            complete("{\"model\": \"demo-byte-lm\", \"prompt\": "),
            400,
            "invalid_request_error",
            null,
            "invalid_json");
    assertThat(e.get("message").asText()).contains("could not parse the JSON body");
    error(complete("[1, 2]"), 400, "invalid_request_error", null, "invalid_json");
    error(complete(""), 400, "invalid_request_error", null, "invalid_json");
    error(
        complete("{\"model\":\"demo-byte-lm\",\"prompt\":\"a\"} trailing"),
        400,
        "invalid_request_error",
        null,
        "invalid_json");
  }

  @Test
  @Order(2)
  void missingFields() throws Exception {
    error(
        complete("{\"model\": \"demo-byte-lm\"}"),
        400,
        "invalid_request_error",
        "prompt",
        "missing_required_parameter");
    error(
        complete("{\"prompt\": \"hello\"}"),
        400,
        "invalid_request_error",
        "model",
        "missing_required_parameter");
  }

  @Test
  @Order(3)
  void wrongTypes() throws Exception {
    error(
        complete("{\"model\": 7, \"prompt\": \"hello\"}"),
        400,
        "invalid_request_error",
        "model",
        "invalid_type");
    error(
        complete("{\"model\": \"demo-byte-lm\", \"prompt\": {\"a\": 1}}"),
        400,
        "invalid_request_error",
        "prompt",
        "invalid_type");
    error(
        complete("{\"model\": \"demo-byte-lm\", \"prompt\": [1, 2, 300]}"),
        400,
        "invalid_request_error",
        "prompt",
        null);
    error(
        complete("{\"model\": \"demo-byte-lm\", \"prompt\": [\"a\", 2]}"),
        400,
        "invalid_request_error",
        "prompt",
        null);
    error(
        complete("{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", \"max_tokens\": \"5\"}"),
        400,
        "invalid_request_error",
        "max_tokens",
        "invalid_type");
    error(
        complete("{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", \"max_tokens\": 2.5}"),
        400,
        "invalid_request_error",
        "max_tokens",
        "invalid_type");
    error(
        complete("{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", \"seed\": \"abc\"}"),
        400,
        "invalid_request_error",
        "seed",
        "invalid_type");
    error(
        complete("{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", \"n\": 0}"),
        400,
        "invalid_request_error",
        "n",
        null);
    error(
        complete("{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", \"bogus\": 1}"),
        400,
        "invalid_request_error",
        "bogus",
        null);
  }

  @Test
  @Order(4)
  void maxTokensOutOfRange() throws Exception {
    error(
        complete("{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", \"max_tokens\": -5}"),
        400,
        "invalid_request_error",
        "max_tokens",
        "invalid_value");
    error(
        complete("{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", \"max_tokens\": 0}"),
        400,
        "invalid_request_error",
        "max_tokens",
        "invalid_value");
    error(
        complete("{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", \"max_tokens\": 100000}"),
        400,
        "invalid_request_error",
        "max_tokens",
        "invalid_value");
    error(
        complete(
            "{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", \"max_tokens\":"
                + " 99999999999999999999}"),
        400,
        "invalid_request_error",
        "max_tokens",
        "invalid_value");
  }

  @Test
  @Order(5)
  void contextLengthExceeded() throws Exception {
    String longPrompt = "a".repeat(1020);
    error(
        complete(
            "{\"model\": \"demo-byte-lm\", \"prompt\": \""
                + longPrompt
                + "\", \"max_tokens\": 16}"),
        400,
        "invalid_request_error",
        "prompt",
        "context_length_exceeded");
  }

  @Test
  @Order(6)
  void temperatureOutOfRange() throws Exception {
    error(
        complete("{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", \"temperature\": 3}"),
        400,
        "invalid_request_error",
        "temperature",
        "invalid_value");
    error(
        complete("{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", \"temperature\": -0.1}"),
        400,
        "invalid_request_error",
        "temperature",
        "invalid_value");
  }

  @Test
  @Order(7)
  void streamOfTheWrongTypeIsRefused() throws Exception {
    JsonNode e =
        error(
            complete("{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", \"stream\": \"true\"}"),
            400,
            "invalid_request_error",
            "stream",
            "invalid_type");
    assertThat(e.get("message").asText()).contains("must be a boolean");
  }

  @Test
  @Order(8)
  void unknownModel() throws Exception {
    error(
        complete("{\"model\": \"gpt-5\", \"prompt\": \"x\"}"),
        404,
        "invalid_request_error",
        "model",
        "model_not_found");
  }

  @Test
  @Order(9)
  void missingKey() throws Exception {
    JsonNode e =
        error(
            client.post("/v1/completions", null, "{\"model\":\"demo-byte-lm\",\"prompt\":\"x\"}"),
            401,
            "invalid_request_error",
            null,
            "missing_api_key");
    assertThat(e.get("message").asText()).contains("didn't provide an API key");
    error(client.get("/v1/usage", null), 401, "invalid_request_error", null, "missing_api_key");
    error(client.get("/v1/models", null), 401, "invalid_request_error", null, "missing_api_key");
  }

  @Test
  @Order(10)
  void wrongKey() throws Exception {
    String body = "{\"model\":\"demo-byte-lm\",\"prompt\":\"x\"}";
    // well-formed but unknown: goes to the database
    String unknown = "gm_" + "A".repeat(40);
    JsonNode e =
        error(
            client.post("/v1/completions", unknown, body),
            401,
            "invalid_request_error",
            null,
            "invalid_api_key");
    assertThat(e.get("message").asText()).doesNotContain(unknown);
    // malformed
    error(
        client.post("/v1/completions", "sk-nonsense", body),
        401,
        "invalid_request_error",
        null,
        "invalid_api_key");
    // not Bearer
    Reply basic =
        client.send(
            client
                .request("/v1/completions", null)
                .header("Authorization", "Basic dXNlcjpwYXNz")
                .POST(HttpRequest.BodyPublishers.ofString(body))
                .build());
    error(basic, 401, "invalid_request_error", null, "invalid_authorization_header");
    // a wrong key must win over a bad body: nothing is validated for strangers
    error(
        client.post("/v1/completions", unknown, "{not json"),
        401,
        "invalid_request_error",
        null,
        "invalid_api_key");
  }

  @Test
  @Order(11)
  void oversizedBody() throws Exception {
    String big = "{\"model\":\"demo-byte-lm\",\"prompt\":\"" + "a".repeat(2 * 1024 * 1024) + "\"}";
    JsonNode e = error(complete(big), 413, "invalid_request_error", null, "request_too_large");
    assertThat(e.get("message").asText()).contains("1048576");
  }

  @Test
  @Order(12)
  void oversizedChunkedBody() throws Exception {
    // No Content-Length: the limit is enforced while the chunks arrive.
    try (Socket s = new Socket("127.0.0.1", server.port())) {
      s.setSoTimeout(30_000);
      OutputStream out = s.getOutputStream();
      out.write(
          ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + key
                  + "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
              .getBytes(StandardCharsets.US_ASCII));
      byte[] chunk = "a".repeat(64 * 1024).getBytes(StandardCharsets.US_ASCII);
      for (int i = 0; i < 24; i++) {
        out.write((Integer.toHexString(chunk.length) + "\r\n").getBytes(StandardCharsets.US_ASCII));
        out.write(chunk);
        out.write("\r\n".getBytes(StandardCharsets.US_ASCII));
      }
      out.write("0\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
      out.flush();
      String response = new String(readAll(s.getInputStream()), StandardCharsets.UTF_8);
      assertThat(response).startsWith("HTTP/1.1 413");
      assertThat(response).contains("request_too_large");
    }
  }

  private static byte[] readAll(InputStream in) throws Exception {
    return in.readAllBytes(); // the server closes the connection after a 413
  }

  @Test
  @Order(13)
  void unknownPath() throws Exception {
    JsonNode e = error(client.get("/v1/nothing", key), 404, "invalid_request_error", null, null);
    assertThat(e.get("message").asText()).contains("/v1/nothing");
    error(client.get("/", null), 404, "invalid_request_error", null, null);
  }

  @Test
  @Order(14)
  void wrongMethod() throws Exception {
    Reply r = client.get("/v1/completions", key);
    error(r, 405, "invalid_request_error", null, "method_not_allowed");
    assertThat(r.header("allow")).isEqualTo("POST");
    error(
        client.post("/v1/usage", key, "{}"),
        405,
        "invalid_request_error",
        null,
        "method_not_allowed");
  }

  @Test
  @Order(15)
  void badUsageWindow() throws Exception {
    error(
        client.get("/v1/usage?start=yesterday", key), 400, "invalid_request_error", "start", null);
    error(
        client.get("/v1/usage?start=2025-01-02T00:00:00Z&end=2025-01-01T00:00:00Z", key),
        400,
        "invalid_request_error",
        "end",
        null);
  }

  @Test
  @Order(16)
  void malformedHttp() throws Exception {
    try (Socket s = new Socket("127.0.0.1", server.port())) {
      s.setSoTimeout(30_000);
      s.getOutputStream()
          .write(
              "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"
                  .getBytes(StandardCharsets.US_ASCII));
      String response = new String(readAll(s.getInputStream()), StandardCharsets.UTF_8);
      assertThat(response).startsWith("HTTP/1.1 400");
    }
  }

  @Test
  @Order(17)
  void keepAliveAndPipelinedRequestsAnswerInOrderAfterErrors() throws Exception {
    String good = "{\"model\":\"demo-byte-lm\",\"prompt\":\"A \",\"max_tokens\":3}";
    String bad = "{\"model\":";
    StringBuilder reqs = new StringBuilder();
    // a slow one first (a generation), then errors and a cheap one, all on one connection
    for (String body : new String[] {good, bad, good}) {
      reqs.append("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ")
          .append(key)
          .append("\r\nContent-Type: application/json\r\nContent-Length: ")
          .append(body.getBytes(StandardCharsets.UTF_8).length)
          .append("\r\n\r\n")
          .append(body);
    }
    reqs.append("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    reqs.append("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    try (Socket s = new Socket("127.0.0.1", server.port())) {
      s.setSoTimeout(60_000);
      s.getOutputStream().write(reqs.toString().getBytes(StandardCharsets.UTF_8));
      s.getOutputStream().flush();
      String all = new String(readAll(s.getInputStream()), StandardCharsets.UTF_8);
      List<String> statuses = new ArrayList<>();
      Matcher m = Pattern.compile("HTTP/1\\.1 (\\d{3}) ").matcher(all);
      while (m.find()) {
        statuses.add(m.group(1));
      }
      assertThat(statuses).as(all).containsExactly("200", "400", "200", "404", "200");
      assertThat(all).contains("{\"status\":\"ok\"}");
    }
  }

  @Test
  @Order(18)
  void fullQueueIsTooManyRequests() throws Exception {
    List<CompletableFuture<Reply>> burst = new ArrayList<>();
    for (int i = 0; i < 10; i++) {
      burst.add(
          client.postAsync(
              "/v1/completions",
              key,
              "{\"model\":\"demo-byte-lm\",\"prompt\":\"Burst "
                  + i
                  + " \",\"max_tokens\":64,"
                  + "\"temperature\":1,\"seed\":"
                  + i
                  + "}"));
    }
    int ok = 0;
    int tooMany = 0;
    for (CompletableFuture<Reply> f : burst) {
      Reply r = f.get(120, TimeUnit.SECONDS);
      if (r.status() == 429) {
        error(r, 429, "rate_limit_error", null, "queue_full");
        assertThat(r.header("retry-after")).isEqualTo("1");
        tooMany++;
      } else {
        assertThat(r.status()).as(r.toString()).isEqualTo(200);
        ok++;
      }
    }
    assertThat(tooMany).isPositive();
    assertThat(ok).isGreaterThanOrEqualTo(1);
  }

  @Test
  @Order(100)
  void stillServesAfterEveryError() throws Exception {
    Reply r =
        complete(
            "{\"model\": \"demo-byte-lm\", \"prompt\": [\"The \"], \"max_tokens\": 8,"
                + " \"temperature\": 0, \"user\": \"ignored\", \"n\": 1, \"stream\": false}");
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    assertThat(r.json().get("object").asText()).isEqualTo("text_completion");
    assertThat(r.json().get("usage").get("completion_tokens").asInt()).isBetween(0, 8);
    assertThat(r.header("x-request-id")).isEqualTo(r.json().get("id").asText());

    assertThat(client.get("/healthz", null).status()).isEqualTo(200);
    Reply ready = client.get("/readyz", null);
    assertThat(ready.status()).isEqualTo(200);
    assertThat(ready.json().get("status").asText()).isEqualTo("ready");
    assertThat(ready.json().get("degraded").asBoolean()).as(ready.toString()).isFalse();
    assertThat(ready.json().get("ledger").get("durability").asText()).isEqualTo("durable");
    assertThat(ready.json().get("ledger").get("breaker").asText()).isEqualTo("CLOSED");
    // the embedded database is durable: fsync, full_page_writes, synchronous_commit all on
    assertThat(ready.json().get("database_durability").toString())
        .isEqualTo(
            "{\"fsync\":\"on\",\"full_page_writes\":\"on\",\"synchronous_commit\":\"on\","
                + "\"safe\":true,\"unsafe_allowed\":false}");
    // no admin.token configured: the admin API does not exist
    Reply admin = client.get("/admin/reconcile", key);
    assertThat(admin.status()).as(admin.toString()).isEqualTo(404);
    assertThat(admin.json().get("error").get("code").asText()).isEqualTo("unknown_url");
    Reply metrics = client.get("/metrics", null);
    assertThat(metrics.status()).isEqualTo(200);
    assertThat(metrics.raw().body())
        .contains("gpumeter_http_responses_total{code=\"400\"}")
        .contains("gpumeter_http_responses_total{code=\"401\"}")
        .contains("gpumeter_http_responses_total{code=\"413\"}")
        .contains(
            "gpumeter_device_charged_nanoseconds_total{device=\"cpu\",model=\"demo-byte-lm\"}")
        .contains("gpumeter_ledger_accepting 1.0\n")
        .contains("gpumeter_ledger_degraded 0.0\n");
    // the empty prompt starts a new document
    Reply empty = complete("{\"model\": \"demo-byte-lm\", \"prompt\": \"\", \"max_tokens\": 4}");
    assertThat(empty.status()).as(empty.toString()).isEqualTo(200);
    assertThat(empty.json().get("usage").get("prompt_tokens").asInt()).isEqualTo(1);
  }
}
