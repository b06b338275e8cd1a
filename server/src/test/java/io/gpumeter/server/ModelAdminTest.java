package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.ContinuousScheduler;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.db.Database;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;

/**
 * Several models in one real server, and loading and unloading them through the admin API while it
 * serves: the repository's two bundled models plus a broken model directory in the models folder
 * (reported with its reason, the others served); {@code /v1/models} with each model's footprint;
 * unload with a request in flight (it finishes and is charged, new ones get 404); load while
 * serving (system time, never charged; completions work); a broken directory gives a clear 400 and
 * the others keep serving.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class ModelAdminTest {
  private static final String TOKEN = "admin-token-for-model-tests-0123";
  private static final String DEMO = "demo-byte-lm";
  private static final String LLAMA = "tiny-llama-bpe";

  private static Path modelsDir;
  private static GpumeterServer server;
  private static Client client;
  private static CreatedApiKey key;
  private static Database db;
  private static final ConcurrentLinkedQueue<Seen> reports = new ConcurrentLinkedQueue<>();

  /** A step report as the listener saw it (reports are reused objects: copied). */
  record Seen(String model, long measuredNs, long chargedNs, int sequences) {}

  @BeforeAll
  static void start() throws Exception {
    Path repoModels = TestServers.repoRoot().resolve("models");
    modelsDir =
        Files.createDirectories(
            Path.of("target", "test-data", "models-" + System.nanoTime()).toAbsolutePath());
    Files.createSymbolicLink(modelsDir.resolve(DEMO), repoModels.resolve(DEMO));
    Files.createSymbolicLink(modelsDir.resolve(LLAMA), repoModels.resolve(LLAMA));
    brokenModel(modelsDir.resolve("broken"));
    StepListener copy =
        r -> reports.add(new Seen(r.model(), r.measuredNs(), r.chargedNs(), r.sequences()));
    server =
        GpumeterServer.start(
            TestServers.config("models")
                .modelsDir(modelsDir)
                .set("admin.token", TOKEN)
                .set("shutdown.grace", "120s")
                .build(),
            copy);
    client = new Client(server.port());
    key = server.billing().apiKeys().create("models");
    db = Database.start(server.config().toolDatabaseConfig());
  }

  /** A directory with a valid model.json whose TorchScript file is not TorchScript. */
  static void brokenModel(Path dir) throws Exception {
    Files.createDirectories(dir);
    Files.writeString(
        dir.resolve("model.json"),
        """
        {"name": "broken-model", "file": "model.pt", "tokenizer": "byte", "vocabSize": 257,
         "contextLength": 64, "eosId": 256, "dtype": "float32", "layers": 1, "kvHeads": 1,
         "headDim": 8}
        """);
    Files.writeString(dir.resolve("model.pt"), "this is not a TorchScript archive");
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

  private static Reply complete(String model, int maxTokens) throws Exception {
    return client.post("/v1/completions", key.plaintext(), body(model, maxTokens));
  }

  private static String body(String model, int maxTokens) {
    return "{\"model\":\""
        + model
        + "\",\"prompt\":\"The Python interpreter\",\"max_tokens\":"
        + maxTokens
        + ",\"temperature\":0}";
  }

  private static void assertError(Reply r, int status, String code) {
    assertThat(r.status()).as(r.toString()).isEqualTo(status);
    assertThat(r.json().get("error").get("code").asText()).as(r.toString()).isEqualTo(code);
    assertThat(r.json().get("error").get("message").asText()).isNotBlank();
  }

  /** The stored charge of a request: device_ns of its one usage record. */
  private static long storedCharge(String requestId) throws Exception {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT count(*), coalesce(sum(device_ns), 0) FROM usage_records"
                    + " WHERE request_id = ?")) {
      ps.setString(1, requestId);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        assertThat(rs.getLong(1)).as("usage records of " + requestId).isEqualTo(1);
        return rs.getLong(2);
      }
    }
  }

  private static void assertChargedAsAnswered(Reply r) throws Exception {
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    long ns = r.json().get("usage").get("device_time_ns").asLong();
    assertThat(ns).isPositive();
    assertThat(storedCharge(r.json().get("id").asText())).isEqualTo(ns);
  }

  @Test
  @Order(1)
  void bothModelsAreServedWithTheirFootprintAndTheBrokenOneIsReported() throws Exception {
    Reply ready = client.get("/readyz", null);
    assertThat(ready.status()).as(ready.toString()).isEqualTo(200);
    assertThat(ready.json().get("models").toString())
        .isEqualTo("[\"" + DEMO + "\",\"" + LLAMA + "\"]");
    JsonNode failures = ready.json().get("model_failures");
    assertThat(failures).hasSize(1);
    assertThat(failures.get(0).get("directory").asText()).endsWith("broken");
    assertThat(failures.get(0).get("reason").asText()).contains("broken-model");

    Reply list = client.get("/v1/models", key.plaintext());
    assertThat(list.status()).isEqualTo(200);
    assertThat(list.json().get("data")).hasSize(2);
    assertThat(list.json().get("model_failures")).hasSize(1);
    for (JsonNode m : list.json().get("data")) {
      long params = m.get("parameters").asLong();
      assertThat(params).as(m.toString()).isPositive();
      assertThat(m.get("parameter_bytes").asLong()).isEqualTo(4 * params);
      assertThat(m.get("dtype").asText()).isEqualTo("float32");
      assertThat(m.get("device").asText()).isEqualTo("cpu");
      assertThat(m.get("context_length").asInt()).isPositive();
    }
    JsonNode llama = client.get("/v1/models/" + LLAMA, key.plaintext()).json();
    // the checkpoint's 1,049,728 (export.json; tied embedding once) plus the 5,120 zero q/k/v/o
    // and MLP biases the exporter materialises for Llama (no biases in the checkpoint)
    assertThat(llama.get("parameters").asLong()).isEqualTo(1_054_848L);
    assertThat(llama.get("context_length").asInt()).isEqualTo(512);
    assertThat(llama.get("tokenizer").asText()).isEqualTo("hf");
    JsonNode demo = client.get("/v1/models/" + DEMO, key.plaintext()).json();
    assertThat(demo.get("parameters").asLong()).isEqualTo(990_208L);

    assertChargedAsAnswered(complete(LLAMA, 8));
    assertChargedAsAnswered(complete(DEMO, 8));
  }

  @Test
  @Order(2)
  void unloadLetsTheRequestInFlightFinishAndIsChargedThenRefusesNewOnes() throws Exception {
    ContinuousScheduler llama =
        server.schedulers().stream()
            .filter(s -> s.modelName().equals(LLAMA))
            .findFirst()
            .orElseThrow();
    CompletableFuture<Reply> inflight =
        client.postAsync("/v1/completions", key.plaintext(), body(LLAMA, 48));
    await().atMost(Duration.ofSeconds(60)).until(() -> llama.stats().running() > 0);
    Reply unloaded = client.post("/admin/models/" + LLAMA + "/unload", TOKEN, "");
    assertThat(unloaded.status()).as(unloaded.toString()).isEqualTo(200);
    assertThat(unloaded.json().get("unloaded").asBoolean()).isTrue();
    // unload returned once the running sequence had finished (its response may still be on the
    // way: it waits for its charge to be durable); it is answered and charged in full, not cut
    assertThat(llama.stats().running()).isZero();
    Reply r = inflight.get(60, TimeUnit.SECONDS);
    assertChargedAsAnswered(r);
    assertThat(r.json().get("choices").get(0).get("finish_reason").asText()).isIn("stop", "length");
    if (r.json().get("choices").get(0).get("finish_reason").asText().equals("length")) {
      assertThat(r.json().get("usage").get("completion_tokens").asInt()).isEqualTo(48);
    }
    assertThat(server.schedulers()).noneMatch(s -> s.modelName().equals(LLAMA));

    assertError(complete(LLAMA, 4), 404, "model_not_found");
    assertError(client.get("/v1/models/" + LLAMA, key.plaintext()), 404, "model_not_found");
    assertError(
        client.post("/admin/models/" + LLAMA + "/unload", TOKEN, ""), 404, "model_not_found");
    assertChargedAsAnswered(complete(DEMO, 4));
  }

  @Test
  @Order(3)
  void loadWhileServingIsSystemTimeAndTheModelServes() throws Exception {
    reports.clear();
    Reply loaded =
        client.post(
            "/admin/models/load",
            TOKEN,
            "{\"directory\":\""
                + modelsDir.resolve(LLAMA).toString().replace("\\", "\\\\")
                + "\"}");
    assertThat(loaded.status()).as(loaded.toString()).isEqualTo(200);
    assertThat(loaded.json().get("id").asText()).isEqualTo(LLAMA);
    assertThat(loaded.json().get("parameters").asLong()).isEqualTo(1_054_848L);
    // load and every warm-up pass reached reconciliation as system steps, nothing charged
    assertThat(reports).isNotEmpty();
    assertThat(reports).allSatisfy(s -> assertThat(s.model()).isEqualTo(LLAMA));
    assertThat(reports).hasSizeGreaterThan(2); // the load and the warm-up passes
    assertThat(reports)
        .allSatisfy(
            s -> {
              assertThat(s.measuredNs()).isPositive();
              assertThat(s.chargedNs()).isZero();
              assertThat(s.sequences()).isZero();
            });
    assertChargedAsAnswered(complete(LLAMA, 8));
    assertThat(client.get("/v1/models", key.plaintext()).json().get("data")).hasSize(2);
    // loading the same name twice is refused
    Reply again =
        client.post(
            "/admin/models/load", TOKEN, "{\"directory\":\"" + modelsDir.resolve(LLAMA) + "\"}");
    assertError(again, 400, "model_load_failed");
    assertThat(again.json().get("error").get("message").asText()).contains("already served");
  }

  @Test
  @Order(4)
  void aBrokenDirectoryIsAClearErrorAndTheOthersKeepServing() throws Exception {
    Reply broken =
        client.post(
            "/admin/models/load", TOKEN, "{\"directory\":\"" + modelsDir.resolve("broken") + "\"}");
    assertError(broken, 400, "model_load_failed");
    assertThat(broken.json().get("error").get("message").asText())
        .contains("broken-model")
        .contains("cannot load");
    assertThat(broken.json().get("error").get("param").asText()).isEqualTo("directory");
    Reply missing =
        client.post(
            "/admin/models/load", TOKEN, "{\"directory\":\"" + modelsDir.resolve("nope") + "\"}");
    assertError(missing, 400, "model_load_failed");
    assertThat(missing.json().get("error").get("message").asText()).contains("not found");
    assertError(client.post("/admin/models/load", TOKEN, "{}"), 400, "missing_required_parameter");
    assertError(
        client.post("/admin/models/load", TOKEN, "{\"directory\": 3}"), 400, "invalid_type");
    assertError(client.post("/admin/models/load", TOKEN, "[]"), 400, "invalid_json");
    assertError(client.post("/admin/models/load", "wrong-token", "{}"), 401, "invalid_admin_token");
    assertError(client.get("/admin/models/load", TOKEN), 405, "method_not_allowed");
    assertThat(client.get("/readyz", null).json().get("models")).hasSize(2);
    assertChargedAsAnswered(complete(DEMO, 4));
    assertChargedAsAnswered(complete(LLAMA, 4));
  }
}
