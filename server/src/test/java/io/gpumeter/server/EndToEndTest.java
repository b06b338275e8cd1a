package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.StepReport;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.io.OutputStream;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.sql.Array;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import javax.sql.DataSource;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;

/**
 * The whole path over real HTTP: concurrent completions from two keys share batched steps, every
 * step's time is split exactly, every request is charged exactly once in PostgreSQL, the charges
 * add up to the measured device time, and each key sees only its own usage.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class EndToEndTest {
  private static final int PER_KEY = 8;
  private static final String ADMIN_TOKEN = "admin-token-for-tests-0123456789";

  /** One charged step as the scheduler reported it. */
  record Step(long measuredNs, long sharesNs, int sequences, boolean failed) {}

  private static final ConcurrentLinkedQueue<Step> steps = new ConcurrentLinkedQueue<>();

  /** Every report the server's listener chain saw, system and charged, copied. */
  private static final ConcurrentLinkedQueue<StepReport> reports = new ConcurrentLinkedQueue<>();

  private static final StepListener recorder =
      report -> {
        reports.add(report.copy());
        if (report.kind() == StepReport.Kind.CHARGED) {
          steps.add(
              new Step(
                  report.measuredNs(), sharesSum(report), report.sequences(), report.failed()));
        }
      };

  private static Instant startedAt;
  private static GpumeterServer server;

  /** The server's database, reached the way the CLI tools reach it (billing hands out no pool). */
  private static Database db;

  private static Client client;
  private static CreatedApiKey alice;
  private static CreatedApiKey bob;

  @BeforeAll
  static void start() throws Exception {
    startedAt = Instant.now();
    server =
        GpumeterServer.start(
            TestServers.config("e2e").set("admin.token", ADMIN_TOKEN).build(), recorder);
    db = Database.start(server.config().toolDatabaseConfig());
    client = new Client(server.port());
    alice = server.billing().apiKeys().create("alice");
    bob = server.billing().apiKeys().create("bob");
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

  @Test
  @Order(1)
  void concurrentCompletionsAreBatchedAndChargedExactly() throws Exception {
    String[] topics = {
      "The Python ",
      "A list is ",
      "Functions ",
      "The module ",
      "In this tutorial, ",
      "Exceptions are ",
      "The dictionary ",
      "Classes provide "
    };
    List<CompletableFuture<Reply>> pending = new ArrayList<>();
    List<CreatedApiKey> keyOf = new ArrayList<>();
    for (int i = 0; i < PER_KEY; i++) {
      for (CreatedApiKey k : List.of(alice, bob)) {
        String prompt = topics[i] + (k == alice ? "" : "is ");
        String body =
            "{\"model\":\"demo-byte-lm\",\"prompt\":\""
                + prompt
                + "\",\"max_tokens\":24,"
                + (i % 2 == 0 ? "\"temperature\":0" : "\"temperature\":0.8,\"seed\":" + i)
                + ",\"user\":\""
                + k.accountName()
                + "\"}";
        pending.add(client.postAsync("/v1/completions", k.plaintext(), body));
        keyOf.add(k);
      }
    }
    CompletableFuture.allOf(pending.toArray(new CompletableFuture<?>[0]))
        .get(180, TimeUnit.SECONDS);

    Map<String, Long> idToKey = new HashMap<>();
    Map<String, Long> idToDeviceNs = new HashMap<>();
    for (int i = 0; i < pending.size(); i++) {
      Reply r = pending.get(i).join();
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
      JsonNode j = r.json();
      String id = j.get("id").asText();
      assertThat(id).startsWith("cmpl-");
      assertThat(r.header("x-request-id")).isEqualTo(id);
      assertThat(j.get("object").asText()).isEqualTo("text_completion");
      assertThat(j.get("model").asText()).isEqualTo("demo-byte-lm");
      JsonNode choice = j.get("choices").get(0);
      assertThat(choice.get("text").asText()).as(r.toString()).isNotEmpty();
      assertThat(choice.get("index").asInt()).isZero();
      assertThat(choice.get("logprobs").isNull()).isTrue();
      assertThat(choice.get("finish_reason").asText()).isIn("stop", "length");
      JsonNode u = j.get("usage");
      long ns = u.get("device_time_ns").asLong();
      BigDecimal ms = u.get("device_time_ms").decimalValue();
      assertThat(ms).isPositive();
      assertThat(ms.compareTo(BigDecimal.valueOf(ns, 6))).isZero(); // exact, not rounded
      assertThat(u.get("prefill_time_ns").asLong() + u.get("decode_time_ns").asLong())
          .isEqualTo(ns);
      assertThat(u.get("total_tokens").asInt())
          .isEqualTo(u.get("prompt_tokens").asInt() + u.get("completion_tokens").asInt());
      assertThat(u.get("completion_tokens").asInt()).isBetween(1, 24);
      assertThat(u.get("device").asText()).isEqualTo("cpu");
      assertThat(u.get("timer").asText()).isEqualTo("host");
      assertThat(u.get("device_name").asText()).isNotBlank();
      assertThat(idToKey.put(id, keyOf.get(i).keyId())).as("duplicate id " + id).isNull();
      idToDeviceNs.put(id, ns);
    }
    assertThat(idToKey).hasSize(2 * PER_KEY);

    // Batching happened, and each step's shares add up to its measurement exactly.
    assertThat(steps).isNotEmpty();
    assertThat(steps).anyMatch(s -> s.sequences() > 1);
    assertThat(steps).allSatisfy(s -> assertThat(s.sharesNs()).isEqualTo(s.measuredNs()));
    assertThat(steps).noneMatch(Step::failed);
    long measuredSteps = steps.stream().mapToLong(Step::measuredNs).sum();

    // Exactly one ledger row per request, with the right key; the rows add up to the steps.
    Map<String, long[]> rows = ledgerRows(idToKey.keySet());
    assertThat(rows.keySet()).containsExactlyInAnyOrderElementsOf(idToKey.keySet());
    long ledgerSum = 0;
    for (var e : rows.entrySet()) {
      assertThat(e.getValue()[0]).as("rows for " + e.getKey()).isEqualTo(1);
      assertThat(e.getValue()[1]).as("key of " + e.getKey()).isEqualTo(idToKey.get(e.getKey()));
      assertThat(e.getValue()[2])
          .as("device_ns of " + e.getKey())
          .isEqualTo(idToDeviceNs.get(e.getKey()));
      ledgerSum += e.getValue()[2];
    }
    assertThat(ledgerSum).isEqualTo(measuredSteps);

    // Conservation: charged = Σ requests; measured - system = charged; system (load+warm-up) > 0.
    DeviceTimeCounters.Snapshot c = server.schedulers().get(0).counters().snapshot();
    assertThat(c.chargedNs()).isEqualTo(ledgerSum);
    assertThat(c.measuredNs() - c.systemNs()).isEqualTo(ledgerSum);
    assertThat(c.systemNs()).isPositive();
    assertThat(c.multiSequenceSteps()).isPositive();

    // Each key sees its own requests only, and totals that match its rows.
    for (CreatedApiKey k : List.of(alice, bob)) {
      Reply r = client.get("/v1/usage", k.plaintext());
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
      JsonNode usage = r.json();
      assertThat(usage.get("api_key_id").asLong()).isEqualTo(k.keyId());
      long own =
          idToKey.entrySet().stream()
              .filter(e -> e.getValue() == k.keyId())
              .mapToLong(e -> idToDeviceNs.get(e.getKey()))
              .sum();
      JsonNode totals = usage.get("totals");
      assertThat(totals.get("requests").asLong()).isEqualTo(PER_KEY);
      assertThat(totals.get("device_time_ns").asLong()).isEqualTo(own);
      assertThat(totals.get("device_time_ms").decimalValue().compareTo(BigDecimal.valueOf(own, 6)))
          .isZero();
      long bucketRequests = 0;
      long bucketNs = 0;
      for (JsonNode b : usage.get("data")) {
        assertThat(b.get("model").asText()).isEqualTo("demo-byte-lm");
        assertThat(b.get("hour").asText()).endsWith(":00:00Z");
        bucketRequests += b.get("requests").asLong();
        bucketNs += b.get("device_time_ns").asLong();
        assertThat(b.get("tokens").asLong()).isPositive();
      }
      assertThat(bucketRequests).isEqualTo(PER_KEY);
      assertThat(bucketNs).isEqualTo(own);
      // KV memory-time (issue 18): the totals and the buckets add up to the key's ledger rows.
      long ownKv =
          rows.entrySet().stream()
              .filter(e -> e.getValue()[1] == k.keyId())
              .mapToLong(e -> e.getValue()[3])
              .sum();
      assertThat(ownKv).isPositive();
      assertThat(totals.get("kv_byte_ns").bigIntegerValue()).isEqualTo(BigInteger.valueOf(ownKv));
      assertThat(totals.get("kv_byte_ns_decimal").asText()).isEqualTo(Long.toString(ownKv));
      assertThat(totals.get("peak_kv_bytes").asLong()).isPositive();
      BigInteger bucketKv = BigInteger.ZERO;
      for (JsonNode b : usage.get("data")) {
        bucketKv = bucketKv.add(b.get("kv_byte_ns").bigIntegerValue());
      }
      assertThat(bucketKv).isEqualTo(BigInteger.valueOf(ownKv));
    }

    // The model list tells the device and context length.
    Reply models = client.get("/v1/models", alice.plaintext());
    assertThat(models.status()).isEqualTo(200);
    JsonNode m = models.json().get("data").get(0);
    assertThat(m.get("id").asText()).isEqualTo("demo-byte-lm");
    assertThat(m.get("context_length").asInt()).isEqualTo(1024);
    assertThat(m.get("device").asText()).isEqualTo("cpu");
  }

  /**
   * One step report per step is the only source of every total: counters, the reconciliation feed
   * and the ledger all agree with the reports, and system time (load, warm-up) is in the counters
   * once and in reconciliation once.
   */
  @Test
  @Order(2)
  void countersReconciliationAndLedgerAllReadTheStepReports() throws Exception {
    // the completions of the first test are answered, so the scheduler is quiet
    List<StepReport> charged =
        reports.stream().filter(r -> r.kind() == StepReport.Kind.CHARGED).toList();
    // the other bundled model (tiny-llama-bpe) only loads and warms up: system time, no charge
    assertThat(reports.stream().filter(r -> !r.model().equals("demo-byte-lm")))
        .allSatisfy(r -> assertThat(r.kind()).isEqualTo(StepReport.Kind.SYSTEM));
    List<StepReport> system =
        reports.stream()
            .filter(r -> r.kind() == StepReport.Kind.SYSTEM && r.model().equals("demo-byte-lm"))
            .toList();
    assertThat(charged).isNotEmpty();
    assertThat(system).as("load and warm-up passes").hasSizeGreaterThan(1);
    for (StepReport r : charged) {
      assertThat(r.model()).isEqualTo("demo-byte-lm");
      assertThat(r.device()).isEqualTo("cpu");
      assertThat(sharesSum(r)).isEqualTo(r.measuredNs()).isEqualTo(r.chargedNs());
      assertThat(r.systemNs()).isZero();
    }
    for (StepReport r : system) {
      assertThat(r.model()).isEqualTo("demo-byte-lm");
      assertThat(r.chargedNs()).isZero();
      assertThat(r.sequences()).isZero();
    }
    long chargedNs = charged.stream().mapToLong(StepReport::chargedNs).sum();
    long systemNs = system.stream().mapToLong(StepReport::systemNs).sum();

    DeviceTimeCounters.Snapshot c = server.schedulers().get(0).counters().snapshot();
    assertThat(c.chargedNs()).isEqualTo(chargedNs);
    assertThat(c.systemNs()).as("system time in the counters once").isEqualTo(systemNs);
    assertThat(c.measuredNs()).isEqualTo(chargedNs + systemNs);
    assertThat(c.steps()).isEqualTo(charged.size());
    assertThat(c.stepTokens()).isEqualTo(charged.stream().mapToLong(StepReport::tokens).sum());
    assertThat(c.stepSequences())
        .isEqualTo(charged.stream().mapToLong(StepReport::sequences).sum());
    assertThat(ledgerTotal()).isEqualTo(chargedNs);

    // The reconciliation feed, over everything since before the server started (it flushes
    // first): the same totals, system time once.
    Reply r =
        client.get("/admin/reconcile?from=" + startedAt + "&to=" + Instant.now(), ADMIN_TOKEN);
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    JsonNode lines = r.json().get("lines");
    // one line per served model (demo-byte-lm and tiny-llama-bpe); the requests went to the demo
    assertThat(lines).as(r.toString()).hasSize(2);
    JsonNode line = null;
    for (JsonNode l : lines) {
      if (l.get("model").asText().equals("demo-byte-lm")) {
        line = l;
      } else {
        assertThat(l.get("charged_ns").asLong()).as(l.toString()).isZero();
        assertThat(l.get("system_ns").asLong()).as(l.toString()).isPositive();
      }
    }
    assertThat(line).as(r.toString()).isNotNull();
    assertThat(line.get("model").asText()).isEqualTo("demo-byte-lm");
    assertThat(line.get("device").asText()).isEqualTo("cpu");
    assertThat(line.get("system_ns").asLong())
        .as("system time in reconciliation once")
        .isEqualTo(systemNs);
    assertThat(line.get("charged_ns").asLong()).isEqualTo(chargedNs);
    assertThat(line.get("measured_ns").asLong()).isEqualTo(c.measuredNs());
    assertThat(line.get("steps").asLong()).isEqualTo(charged.size());
    assertThat(line.get("ledger_ns").asLong()).isEqualTo(chargedNs);
    assertThat(line.get("drift_ns").asLong()).isZero();
  }

  @Test
  @Order(3)
  void clientThatDisconnectsIsCancelledAndStillCharged() throws Exception {
    CreatedApiKey carol = server.billing().apiKeys().create("carol");
    String body =
        "{\"model\":\"demo-byte-lm\",\"prompt\":\"The \",\"max_tokens\":1000,\"temperature\":0,"
            + "\"seed\":1}";
    long stepsBefore = server.schedulers().get(0).stats().steps();
    try (Socket s = new Socket("127.0.0.1", server.port())) {
      OutputStream out = s.getOutputStream();
      byte[] b = body.getBytes(StandardCharsets.UTF_8);
      out.write(
          ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + carol.plaintext()
                  + "\r\nContent-Type: application/json\r\nContent-Length: "
                  + b.length
                  + "\r\n\r\n")
              .getBytes(StandardCharsets.US_ASCII));
      out.write(b);
      out.flush();
      // Leave once the generation is under way.
      await("the generation to be under way")
          .atMost(Duration.ofSeconds(30))
          .pollInterval(Duration.ofMillis(5))
          .until(() -> server.schedulers().get(0).stats().steps() >= stepsBefore + 5);
      // A disconnect the server can see: a reset. A plain FIN is a half-close, which the server
      // answers (HttpEdgeTest); it cannot tell it from a close() until it writes.
      s.setSoLinger(true, 0);
    }
    Object[] row =
        await("the cancelled request's charge")
            .atMost(Duration.ofSeconds(30))
            .pollInterval(Duration.ofMillis(50))
            .until(
                () -> {
                  try (Connection c = dataSource().getConnection();
                      PreparedStatement ps =
                          c.prepareStatement(
                              "SELECT status, device_ns, completion_tokens FROM usage_records"
                                  + " WHERE api_key_id = ?")) {
                    ps.setLong(1, carol.keyId());
                    try (ResultSet rs = ps.executeQuery()) {
                      if (!rs.next()) {
                        return null;
                      }
                      Object[] r = {rs.getString(1), rs.getLong(2), rs.getInt(3)};
                      assertThat(rs.next()).as("one row only").isFalse();
                      return r;
                    }
                  }
                },
                java.util.Objects::nonNull);
    String status = (String) row[0];
    long deviceNs = (Long) row[1];
    int completion = (Integer) row[2];
    assertThat(status).isEqualTo("cancelled");
    assertThat(deviceNs).isPositive();
    assertThat(completion).isBetween(1, 999);
    // Conservation still holds with the cancelled request in it.
    DeviceTimeCounters.Snapshot c = server.schedulers().get(0).counters().snapshot();
    assertThat(c.measuredNs() - c.systemNs()).isEqualTo(c.chargedNs());
    assertThat(c.chargedNs()).isEqualTo(ledgerTotal());
  }

  @Test
  @Order(4)
  void closeLetsRunningGenerationsFinishAndAnswersThem() throws Exception {
    long stepsBefore = server.schedulers().get(0).stats().steps();
    CompletableFuture<Reply> inflight =
        client.postAsync(
            "/v1/completions",
            alice.plaintext(),
            "{\"model\":\"demo-byte-lm\",\"prompt\":\"Lists \",\"max_tokens\":200,"
                + "\"temperature\":0.5,\"seed\":7}");
    await("the generation to be under way")
        .atMost(Duration.ofSeconds(30))
        .pollInterval(Duration.ofMillis(2))
        .until(() -> server.schedulers().get(0).stats().steps() >= stepsBefore + 3);
    Thread closer = new Thread(server::close, "test-close");
    closer.start();
    Reply r = inflight.get(60, TimeUnit.SECONDS);
    closer.join(60_000);
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    assertThat(r.json().get("usage").get("device_time_ns").asLong()).isPositive();
    assertThat(server.isReady()).isFalse();
    assertThat(closer.isAlive()).isFalse();
  }

  private static long sharesSum(StepReport r) {
    long sum = 0;
    for (int i = 0; i < r.sequences(); i++) {
      sum += r.share(i);
    }
    return sum;
  }

  private static DataSource dataSource() {
    return db.dataSource();
  }

  /** request id → {rows, api_key_id, device_ns, kv_byte_ns}. */
  private static Map<String, long[]> ledgerRows(java.util.Set<String> ids) throws Exception {
    Map<String, long[]> out = new HashMap<>();
    try (Connection c = dataSource().getConnection()) {
      Array arr = c.createArrayOf("text", ids.toArray());
      try (PreparedStatement ps =
          c.prepareStatement(
              "SELECT request_id, count(*) OVER (PARTITION BY request_id), api_key_id, device_ns,"
                  + " kv_byte_ns FROM usage_records WHERE request_id = ANY (?)")) {
        ps.setArray(1, arr);
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            out.put(
                rs.getString(1),
                new long[] {rs.getLong(2), rs.getLong(3), rs.getLong(4), rs.getLong(5)});
          }
        }
      }
    }
    return out;
  }

  private static long ledgerTotal() throws Exception {
    try (Connection c = dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT coalesce(sum(device_ns), 0) FROM usage_records");
        ResultSet rs = ps.executeQuery()) {
      rs.next();
      return rs.getLong(1);
    }
  }
}
