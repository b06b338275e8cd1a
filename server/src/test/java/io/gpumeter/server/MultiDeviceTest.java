package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.fasterxml.jackson.databind.JsonNode;
import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.errors.OpenAIServiceException;
import com.openai.models.completions.Completion;
import com.openai.models.completions.CompletionCreateParams;
import io.gpumeter.batching.ReplicaRouter;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.StepReport;
import io.gpumeter.model.ModelException;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.Statement;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;

/**
 * A server whose demo model runs two replicas on the CPU ({@code devices = demo-byte-lm=cpu,cpu}),
 * driven through the official OpenAI client: the load spreads over both, every charge records its
 * device (label and index), reconciliation and metrics break down per device with drift 0, and a
 * replica killed mid-run (its next step throws) is taken out of rotation: its requests get a 503
 * {@code device_failed}, are charged for the steps they ran, the other replica keeps serving, and
 * {@code /readyz} shows it.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class MultiDeviceTest {
  private static final String MODEL = "demo-byte-lm";
  private static final String ADMIN_TOKEN = "admin-token-for-tests-0123456789";

  private static GpumeterServer server;
  private static Database db;
  private static Client http;
  private static CreatedApiKey key;
  private static OpenAIClient openai;
  private static Instant startedAt;
  private static ExecutorService clients;

  /** Charged step time per device label, as the step reports said (the measured side). */
  private static final Map<String, AtomicLong> chargedByDevice = new ConcurrentHashMap<>();

  private static final List<StepReport> failedSteps = new CopyOnWriteArrayList<>();

  @BeforeAll
  static void start() throws Exception {
    startedAt = Instant.now().minusSeconds(1);
    server =
        GpumeterServer.start(
            TestServers.config("devices")
                .set("admin.token", ADMIN_TOKEN)
                .devices(MODEL + "=cpu,cpu")
                .build(),
            report -> {
              if (report.kind() == StepReport.Kind.CHARGED && report.model().equals(MODEL)) {
                chargedByDevice
                    .computeIfAbsent(report.device(), d -> new AtomicLong())
                    .addAndGet(report.chargedNs());
                if (report.failed()) {
                  failedSteps.add(report.copy());
                }
              }
            });
    db = Database.start(server.config().toolDatabaseConfig());
    http = new Client(server.port());
    key = server.billing().apiKeys().create("devices");
    openai =
        OpenAIOkHttpClient.builder()
            .apiKey(key.plaintext())
            .baseUrl("http://127.0.0.1:" + server.port() + "/v1")
            .maxRetries(0)
            .timeout(Duration.ofSeconds(180))
            .build();
    clients = Executors.newFixedThreadPool(32);
  }

  @AfterAll
  static void stop() {
    if (clients != null) {
      clients.shutdownNow();
    }
    if (openai != null) {
      openai.close();
    }
    if (db != null) {
      db.close();
    }
    if (server != null) {
      server.close();
    }
  }

  private static CompletableFuture<Completion> complete(int i, int maxTokens) {
    return CompletableFuture.supplyAsync(
        () ->
            openai
                .completions()
                .create(
                    CompletionCreateParams.builder()
                        .model(MODEL)
                        .prompt("Client " + i + " asks the node: ")
                        .maxTokens(maxTokens)
                        .temperature(0)
                        .build()),
        clients);
  }

  /** Stored charges of the demo model per device: {label: [index, records, device_ns]}. */
  private static Map<String, long[]> ledgerByDevice(String status) throws Exception {
    Map<String, long[]> out = new HashMap<>();
    try (Connection c = db.dataSource().getConnection();
        Statement s = c.createStatement();
        ResultSet rs =
            s.executeQuery(
                "SELECT device, device_index, count(*), sum(device_ns)::int8 FROM usage_records"
                    + " WHERE model = '"
                    + MODEL
                    + "'"
                    + (status == null ? "" : " AND status = '" + status + "'")
                    + " GROUP BY device, device_index")) {
      while (rs.next()) {
        out.put(rs.getString(1), new long[] {rs.getInt(2), rs.getLong(3), rs.getLong(4)});
      }
    }
    return out;
  }

  /** Reconciliation per device of the demo model: each line's drift is 0, ledger = charged. */
  private static Map<String, JsonNode> reconcileByDevice() throws Exception {
    Reply r = http.get("/admin/reconcile?from=" + startedAt + "&to=" + Instant.now(), ADMIN_TOKEN);
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    Map<String, JsonNode> out = new HashMap<>();
    for (JsonNode line : r.json().get("lines")) {
      assertThat(line.get("drift_ns").asLong()).as(line.toString()).isZero();
      if (line.get("model").asText().equals(MODEL)) {
        out.put(line.get("device").asText(), line);
      }
    }
    return out;
  }

  private static void awaitQuiet() {
    await()
        .atMost(Duration.ofMinutes(2))
        .until(
            () ->
                server.schedulers().stream().allMatch(s -> s.stats().running() == 0)
                    && server.billing().ledgerStats().queued() == 0);
  }

  @Test
  @Order(1)
  void thirtyTwoClientsSpreadOverBothReplicasAndEachDeviceReconcilesToZero() throws Exception {
    List<CompletableFuture<Completion>> calls = new ArrayList<>();
    for (int i = 0; i < 32; i++) {
      calls.add(complete(i, 16));
    }
    for (CompletableFuture<Completion> c : calls) {
      assertThat(c.get(5, TimeUnit.MINUTES).choices()).hasSize(1);
    }
    awaitQuiet();

    Map<String, long[]> ledger = ledgerByDevice(null);
    assertThat(ledger).containsOnlyKeys("cpu:0", "cpu:1");
    assertThat(ledger.get("cpu:0")[0]).as("device_index of cpu:0").isEqualTo(0);
    assertThat(ledger.get("cpu:1")[0]).as("device_index of cpu:1").isEqualTo(1);
    // both replicas got a fair part of the work (the router picks the least loaded)
    assertThat(ledger.get("cpu:0")[1]).isGreaterThanOrEqualTo(8);
    assertThat(ledger.get("cpu:1")[1]).isGreaterThanOrEqualTo(8);
    assertThat(ledger.get("cpu:0")[1] + ledger.get("cpu:1")[1]).isEqualTo(32);

    // conservation per device: the ledger holds exactly what each device's steps handed out
    for (String device : List.of("cpu:0", "cpu:1")) {
      assertThat(ledger.get(device)[2])
          .as("ledger of %s = its charged step time", device)
          .isEqualTo(chargedByDevice.get(device).get());
    }
    Map<String, JsonNode> lines = reconcileByDevice();
    assertThat(lines).containsOnlyKeys("cpu:0", "cpu:1");
    for (JsonNode line : lines.values()) {
      assertThat(line.get("system_ns").asLong()).as("each replica's load and warm-up").isPositive();
      assertThat(line.get("ledger_ns").asLong()).isEqualTo(line.get("charged_ns").asLong());
    }

    Reply metrics = http.get("/metrics", null);
    assertThat(metrics.raw().body())
        .contains("device=\"cpu:0\"", "device=\"cpu:1\"")
        .contains("gpumeter_device_charged_nanoseconds_total{device=\"cpu:1\",model=\"" + MODEL);

    Reply ready = http.get("/readyz", null);
    assertThat(ready.status()).isEqualTo(200);
    List<JsonNode> replicas = new ArrayList<>();
    ready
        .json()
        .get("replicas")
        .forEach(
            r -> {
              if (r.get("model").asText().equals(MODEL)) {
                replicas.add(r);
              }
            });
    assertThat(replicas).hasSize(2);
    assertThat(replicas).allSatisfy(r -> assertThat(r.get("state").asText()).isEqualTo("serving"));
    assertThat(replicas.get(1).get("device").asText()).isEqualTo("cpu:1");
    assertThat(replicas.get(1).get("device_index").asInt()).isEqualTo(1);
  }

  @Test
  @Order(2)
  void aReplicaKilledMidRunIsTakenOutOfRotationAndEverythingStillReconciles() throws Exception {
    ReplicaRouter router = server.router(MODEL).orElseThrow();
    ReplicaRouter.Replica victim = router.replicas().get(1);
    List<CompletableFuture<Completion>> calls = new ArrayList<>();
    for (int i = 0; i < 12; i++) {
      calls.add(complete(100 + i, 64));
    }
    await().atMost(Duration.ofMinutes(2)).until(() -> victim.scheduler().stats().running() >= 2);
    victim.scheduler().failNextStep(new ModelException("injected: device lost"));

    int ok = 0;
    int deviceFailed = 0;
    for (CompletableFuture<Completion> c : calls) {
      try {
        c.get(5, TimeUnit.MINUTES);
        ok++;
      } catch (java.util.concurrent.ExecutionException e) {
        assertThat(e.getCause())
            .isInstanceOfSatisfying(
                OpenAIServiceException.class,
                ex -> {
                  assertThat(ex.statusCode()).isEqualTo(503);
                  assertThat(ex.code()).contains("device_failed");
                  assertThat(ex.getMessage()).contains("cpu:1");
                });
        deviceFailed++;
      }
    }
    assertThat(deviceFailed).as("the requests on the killed replica").isGreaterThanOrEqualTo(2);
    assertThat(ok).as("the requests on the other replica").isGreaterThanOrEqualTo(1);
    assertThat(victim.state()).isEqualTo(ReplicaRouter.State.FAILED);
    assertThat(failedSteps).hasSize(1);
    assertThat(failedSteps.get(0).device()).isEqualTo("cpu:1");

    // the other replica keeps serving; new work goes there
    for (int i = 0; i < 4; i++) {
      assertThat(complete(200 + i, 4).get(2, TimeUnit.MINUTES).choices()).hasSize(1);
    }
    awaitQuiet();

    Map<String, long[]> failed = ledgerByDevice("failed");
    assertThat(failed).containsOnlyKeys("cpu:1");
    assertThat(failed.get("cpu:1")[1]).isEqualTo(deviceFailed);
    assertThat(failed.get("cpu:1")[2]).as("charged for the steps they ran").isPositive();
    Map<String, long[]> all = ledgerByDevice(null);
    for (String device : List.of("cpu:0", "cpu:1")) {
      assertThat(all.get(device)[2])
          .as("ledger of %s = its charged step time, the failed step included", device)
          .isEqualTo(chargedByDevice.get(device).get());
    }
    Map<String, JsonNode> lines = reconcileByDevice(); // drift 0 on every line
    assertThat(lines).containsOnlyKeys("cpu:0", "cpu:1");

    Reply ready = http.get("/readyz", null);
    assertThat(ready.status()).as("the model still serves").isEqualTo(200);
    JsonNode failedReplica = null;
    for (JsonNode r : ready.json().get("replicas")) {
      if (r.get("model").asText().equals(MODEL) && r.get("device").asText().equals("cpu:1")) {
        failedReplica = r;
      }
    }
    assertThat(failedReplica).isNotNull();
    assertThat(failedReplica.get("state").asText()).isEqualTo("failed");
    assertThat(failedReplica.get("reason").asText()).contains("injected: device lost");
  }
}
