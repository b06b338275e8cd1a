package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import com.fasterxml.jackson.databind.JsonNode;
import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.core.http.HttpResponseFor;
import com.openai.errors.OpenAIServiceException;
import com.openai.models.completions.Completion;
import com.openai.models.completions.CompletionCreateParams;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.db.Database;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.io.OutputStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import javax.sql.DataSource;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * {@code Idempotency-Key} on {@code POST /v1/completions} against real servers (the demo model,
 * embedded PostgreSQL), with the official OpenAI Java client where it can set the header.
 */
class IdempotencyTest {
  static final String MODEL = "demo-byte-lm";

  static String body(String prompt, int maxTokens) {
    return "{\"model\":\""
        + MODEL
        + "\",\"prompt\":\""
        + prompt
        + "\",\"max_tokens\":"
        + maxTokens
        + "}";
  }

  static OpenAIClient openAi(GpumeterServer server, CreatedApiKey key) {
    return OpenAIOkHttpClient.builder()
        .baseUrl("http://127.0.0.1:" + server.port() + "/v1")
        .apiKey(key.plaintext())
        .maxRetries(0)
        .timeout(Duration.ofSeconds(120))
        .build();
  }

  static CompletionCreateParams params(String idempotencyKey, long maxTokens) {
    return CompletionCreateParams.builder()
        .model(MODEL)
        .prompt("Once upon a time")
        .maxTokens(maxTokens)
        .putAdditionalHeader("Idempotency-Key", idempotencyKey)
        .build();
  }

  /** Request ids of the key's stored charges (one row each, whatever the partition). */
  static List<String> chargesOfKey(DataSource ds, long keyId) throws Exception {
    List<String> out = new ArrayList<>();
    try (Connection c = ds.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT request_id FROM usage_records WHERE api_key_id = ? ORDER BY 1")) {
      ps.setLong(1, keyId);
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          out.add(rs.getString(1));
        }
      }
    }
    return out;
  }

  static String voidReason(DataSource ds, String requestId) throws Exception {
    try (Connection c = ds.getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT reason FROM charge_voids WHERE request_id = ?")) {
      ps.setString(1, requestId);
      try (ResultSet rs = ps.executeQuery()) {
        return rs.next() ? rs.getString(1) : null;
      }
    }
  }

  /**
   * A retry with the same key gets the stored answer (same id, text and device time, marked as a
   * replay) and adds no charge, also from a second server started on the same data folder after the
   * first stopped; the same key with another body is refused with 422.
   */
  @Test
  @Timeout(300)
  void aRetriedCompletionIsAnsweredFromTheStoreAndChargedOnceAcrossARestart() throws Exception {
    ServerConfig config = TestServers.config("idem-restart").build();
    String idem = "retry-" + System.nanoTime();
    CreatedApiKey key;
    Completion first;
    try (GpumeterServer server = GpumeterServer.start(config, StepListener.NONE)) {
      key = server.billing().apiKeys().create("idem-restart");
      OpenAIClient openAi = openAi(server, key);
      try {
        try (HttpResponseFor<Completion> r1 =
            openAi.completions().withRawResponse().create(params(idem, 6))) {
          assertThat(r1.statusCode()).isEqualTo(200);
          assertThat(r1.headers().values("idempotent-replayed")).isEmpty();
          first = r1.parse();
        }
        try (HttpResponseFor<Completion> r2 =
            openAi.completions().withRawResponse().create(params(idem, 6))) {
          assertThat(r2.statusCode()).isEqualTo(200);
          assertThat(r2.headers().values("idempotent-replayed")).containsExactly("true");
          assertThat(r2.headers().values("x-request-id")).containsExactly(first.id());
          Completion second = r2.parse();
          assertThat(second.id()).isEqualTo(first.id());
          assertThat(second.choices().get(0).text()).isEqualTo(first.choices().get(0).text());
          assertThat(second.usage()).isEqualTo(first.usage()); // device time included
        }

        // Same key, another body: refused, nothing generated.
        assertThatThrownBy(() -> openAi.completions().create(params(idem, 7)))
            .isInstanceOfSatisfying(
                OpenAIServiceException.class,
                e -> {
                  assertThat(e.statusCode()).isEqualTo(422);
                  assertThat(e.code()).contains("idempotency_key_reused");
                });
      } finally {
        openAi.close();
      }
      try (Database db = Database.start(server.config().toolDatabaseConfig())) {
        await()
            .atMost(60, TimeUnit.SECONDS)
            .until(() -> chargesOfKey(db.dataSource(), key.keyId()).size() == 1);
        assertThat(chargesOfKey(db.dataSource(), key.keyId())).containsExactly(first.id());
      }
    }

    // A new server on the same data folder: the key and its answer survived.
    try (GpumeterServer again = GpumeterServer.start(config, StepListener.NONE)) {
      Client raw = new Client(again.port());
      JsonNode expected =
          Json.MAPPER.readTree(
              com.openai.core.ObjectMappers.jsonMapper().writeValueAsString(first));
      Reply replay =
          raw.send(
              raw.request("/v1/completions", key.plaintext())
                  .header("Content-Type", "application/json")
                  .header("Idempotency-Key", idem)
                  // the same request with other key order and spacing: the same canonical body
                  .POST(
                      java.net.http.HttpRequest.BodyPublishers.ofString(
                          "{ \"prompt\": \"Once upon a time\", \"max_tokens\": 6,"
                              + " \"model\": \""
                              + MODEL
                              + "\" }"))
                  .build());
      assertThat(replay.status()).as(replay.toString()).isEqualTo(200);
      assertThat(replay.header("idempotent-replayed")).isEqualTo("true");
      assertThat(replay.header("x-request-id")).isEqualTo(first.id());
      assertThat(replay.json().get("id").asText()).isEqualTo(first.id());
      assertThat(replay.json().get("choices")).isEqualTo(expected.get("choices"));
      assertThat(replay.json().get("usage").get("device_time_ns"))
          .isEqualTo(expected.get("usage").get("device_time_ns"));

      // Without the header the same body is a new request, charged on its own.
      Reply plain = raw.post("/v1/completions", key.plaintext(), body("Once upon a time", 6));
      assertThat(plain.status()).as(plain.toString()).isEqualTo(200);
      assertThat(plain.header("idempotent-replayed")).isNull();
      try (Database db = Database.start(again.config().toolDatabaseConfig())) {
        String plainId = plain.json().get("id").asText();
        await()
            .atMost(60, TimeUnit.SECONDS)
            .until(() -> chargesOfKey(db.dataSource(), key.keyId()).size() == 2);
        assertThat(chargesOfKey(db.dataSource(), key.keyId()))
            .containsExactlyInAnyOrder(first.id(), plainId);
      }
    }
  }

  /**
   * While the first attempt runs (its charge's commit held by a lock), a retry gets 409 with
   * Retry-After; once it is answered the retry replays it. A client that leaves before its answer
   * is stored releases the key: the retry runs again, and the abandoned attempt's finished charge
   * is voided, so the key is paid once.
   */
  @Test
  @Timeout(300)
  void aRetryWhileTheFirstRunsGets409AndAnAbandonedFirstAttemptRunsAgain() throws Exception {
    try (GpumeterServer server =
            GpumeterServer.start(TestServers.config("idem-409").build(), StepListener.NONE);
        Database db = Database.start(server.config().toolDatabaseConfig())) {
      CreatedApiKey key = server.billing().apiKeys().create("idem-409");
      Client client = new Client(server.port());
      Reply warm = client.post("/v1/completions", key.plaintext(), body("Hi ", 2));
      assertThat(warm.status()).as(warm.toString()).isEqualTo(200); // the key is cached now

      String running = "running-" + System.nanoTime();
      CompletableFuture<Reply> firstAttempt;
      try (Connection lock = db.maintenanceDataSource().getConnection()) {
        lock.setAutoCommit(false);
        try (Statement st = lock.createStatement()) {
          // The ledger's commit waits on this lock: the first attempt stays in flight.
          st.execute("LOCK TABLE usage_hourly IN EXCLUSIVE MODE");
        }
        long completedBefore = server.schedulers().get(0).stats().completed();
        firstAttempt = postWithKey(client, key, running, body("Hello ", 4));
        await()
            .atMost(60, TimeUnit.SECONDS)
            .until(() -> server.schedulers().get(0).stats().completed() > completedBefore);
        Reply busy = sendWithKey(client, key, running, body("Hello ", 4));
        assertThat(busy.status()).as(busy.toString()).isEqualTo(409);
        assertThat(busy.header("Retry-After")).isEqualTo("1");
        assertThat(busy.json().get("error").get("code").asText())
            .isEqualTo("idempotency_key_in_use");
        assertThat(firstAttempt).isNotDone();
        lock.rollback();
      }
      Reply first = firstAttempt.get(60, TimeUnit.SECONDS);
      assertThat(first.status()).as(first.toString()).isEqualTo(200);
      Reply retry = sendWithKey(client, key, running, body("Hello ", 4));
      assertThat(retry.status()).as(retry.toString()).isEqualTo(200);
      assertThat(retry.header("idempotent-replayed")).isEqualTo("true");
      assertThat(retry.json().get("id")).isEqualTo(first.json().get("id"));

      // The client resets after its generation finished, before the answer is stored.
      String abandoned = "abandoned-" + System.nanoTime();
      List<String> before = chargesOfKey(db.dataSource(), key.keyId());
      try (Connection lock = db.maintenanceDataSource().getConnection()) {
        lock.setAutoCommit(false);
        try (Statement st = lock.createStatement()) {
          st.execute("LOCK TABLE usage_hourly IN EXCLUSIVE MODE");
        }
        long completedBefore = server.schedulers().get(0).stats().completed();
        try (Socket sock = new Socket("127.0.0.1", server.port())) {
          OutputStream out = sock.getOutputStream();
          byte[] b = body("Hello ", 4).getBytes(StandardCharsets.UTF_8);
          out.write(
              ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + key.plaintext()
                      + "\r\nIdempotency-Key: "
                      + abandoned
                      + "\r\nContent-Type: application/json\r\nContent-Length: "
                      + b.length
                      + "\r\n\r\n")
                  .getBytes(StandardCharsets.US_ASCII));
          out.write(b);
          out.flush();
          await()
              .atMost(60, TimeUnit.SECONDS)
              .until(() -> server.schedulers().get(0).stats().completed() > completedBefore);
          sock.setSoLinger(true, 0); // close() now sends a reset
        }
        // The key is released once the server saw the reset: the retry is not told 409.
        await()
            .atMost(30, TimeUnit.SECONDS)
            .until(() -> idempotencyRows(db.dataSource(), abandoned) == 0);
        lock.rollback();
      }
      Reply rerun = sendWithKey(client, key, abandoned, body("Hello ", 4));
      assertThat(rerun.status()).as(rerun.toString()).isEqualTo(200);
      assertThat(rerun.header("idempotent-replayed")).isNull();
      String rerunId = rerun.json().get("id").asText();
      await()
          .atMost(60, TimeUnit.SECONDS)
          .until(() -> chargesOfKey(db.dataSource(), key.keyId()).size() == before.size() + 2);
      List<String> added = new ArrayList<>(chargesOfKey(db.dataSource(), key.keyId()));
      added.removeAll(before);
      assertThat(added).contains(rerunId).hasSize(2);
      String abandonedId = added.get(added.get(0).equals(rerunId) ? 1 : 0);
      await()
          .atMost(30, TimeUnit.SECONDS)
          .until(() -> "client_gone".equals(voidReason(db.dataSource(), abandonedId)));
      assertThat(voidReason(db.dataSource(), rerunId)).isNull();
      Reply replay = sendWithKey(client, key, abandoned, body("Hello ", 4));
      assertThat(replay.header("idempotent-replayed")).isEqualTo("true");
      assertThat(replay.json().get("id").asText()).isEqualTo(rerunId);
    }
  }

  /** Bad keys and a key with a stream get an OpenAI-style 400 and change nothing. */
  @Test
  @Timeout(300)
  void badKeysAndStreamingWithAKeyAreRefused() throws Exception {
    try (GpumeterServer server =
            GpumeterServer.start(TestServers.config("idem-bad").build(), StepListener.NONE);
        Database db = Database.start(server.config().toolDatabaseConfig())) {
      CreatedApiKey key = server.billing().apiKeys().create("idem-bad");
      Client client = new Client(server.port());
      long completedBefore = server.schedulers().get(0).stats().completed();
      Reply tooLong = sendWithKey(client, key, "x".repeat(256), body("Hi ", 2));
      // Not ASCII: the JDK client would not send these bytes, so a raw socket does.
      String nonAscii = rawPostWithKey(server.port(), key, "caf\u00e9", body("Hi ", 2));
      assertThat(nonAscii).startsWith("HTTP/1.1 400 ").contains("\"invalid_idempotency_key\"");
      for (Reply r : List.of(tooLong)) {
        assertThat(r.status()).as(r.toString()).isEqualTo(400);
        JsonNode error = r.json().get("error");
        assertThat(error.get("type").asText()).isEqualTo("invalid_request_error");
        assertThat(error.get("code").asText()).isEqualTo("invalid_idempotency_key");
        assertThat(error.get("message").asText()).contains("Idempotency-Key", "255");
        assertThat(error.has("param")).isTrue();
      }
      Reply stream =
          sendWithKey(
              client,
              key,
              "streamed",
              "{\"model\":\"" + MODEL + "\",\"prompt\":\"Hi\",\"stream\":true}");
      assertThat(stream.status()).as(stream.toString()).isEqualTo(400);
      assertThat(stream.json().get("error").get("param").asText()).isEqualTo("stream");
      assertThat(stream.json().get("error").get("code").asText())
          .isEqualTo("idempotency_key_with_stream");
      assertThat(server.schedulers().get(0).stats().completed()).isEqualTo(completedBefore);
      assertThat(idempotencyRows(db.dataSource(), null)).isZero();
      assertThat(chargesOfKey(db.dataSource(), key.keyId())).isEmpty();
      // The server serves normally afterwards.
      Reply ok = sendWithKey(client, key, "fine", body("Hi ", 2));
      assertThat(ok.status()).as(ok.toString()).isEqualTo(200);
    }
  }

  /** One POST over a raw socket, the key's bytes as UTF-8; returns the response head and body. */
  static String rawPostWithKey(int port, CreatedApiKey key, String idem, String body)
      throws Exception {
    try (Socket sock = new Socket("127.0.0.1", port)) {
      sock.setSoTimeout(60_000);
      byte[] b = body.getBytes(StandardCharsets.UTF_8);
      OutputStream out = sock.getOutputStream();
      out.write(
          ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
                  + key.plaintext()
                  + "\r\nIdempotency-Key: "
                  + idem
                  + "\r\nContent-Type: application/json\r\nContent-Length: "
                  + b.length
                  + "\r\n\r\n")
              .getBytes(StandardCharsets.UTF_8));
      out.write(b);
      out.flush();
      return new String(sock.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    }
  }

  static long idempotencyRows(DataSource ds, String idempotencyKey) throws Exception {
    try (Connection c = ds.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT count(*) FROM idempotency_keys WHERE ? IS NULL OR idempotency_key = ?")) {
      ps.setString(1, idempotencyKey);
      ps.setString(2, idempotencyKey);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }

  static Reply sendWithKey(Client client, CreatedApiKey key, String idem, String body)
      throws Exception {
    return client.send(request(client, key, idem, body));
  }

  static CompletableFuture<Reply> postWithKey(
      Client client, CreatedApiKey key, String idem, String body) {
    return CompletableFuture.supplyAsync(
        () -> {
          try {
            return sendWithKey(client, key, idem, body);
          } catch (Exception e) {
            throw new IllegalStateException(e);
          }
        });
  }

  static java.net.http.HttpRequest request(
      Client client, CreatedApiKey key, String idem, String body) {
    return client
        .request("/v1/completions", key.plaintext())
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", idem)
        .POST(java.net.http.HttpRequest.BodyPublishers.ofString(body))
        .build();
  }
}
