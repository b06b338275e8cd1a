package io.gpumeter.server.faults;

import static io.gpumeter.server.faults.FaultSupport.await;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import io.gpumeter.server.GpumeterServer;
import io.gpumeter.server.Main;
import io.gpumeter.server.TestServers;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.io.ByteArrayOutputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;

/**
 * Reconciliation over a closed range after a mixed load (finished, cancelled by a client that
 * disconnects, timed out by a short {@code scheduler.request_timeout}) is exactly zero, through the
 * admin endpoint and through {@code reconcile} run beside the server; a charge without metered
 * steps shows as drift (exit status 3). Also: {@code create-key} beside the running server (the
 * embedded database is the server's: the tool connects to it instead of starting one).
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class ReconciliationTest {
  private static final String TOKEN = "admin-token-for-tests-0123456789";
  private static final int SHORT = 12;
  private static final int LONG = 3;
  private static final int DISCONNECTS = 2;

  private static GpumeterServer server;

  /** The server's database, reached the way the CLI tools reach it (billing hands out no pool). */
  private static Database db;

  private static Client client;
  private static CreatedApiKey key;
  private static Path config;
  private static Instant from;
  private static Instant to;

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            TestServers.config("reconcile")
                .set("admin.token", TOKEN)
                .set("scheduler.request_timeout", "500ms")
                .build(),
            StepListener.NONE);
    db = Database.start(server.config().toolDatabaseConfig());
    client = new Client(server.port());
    key = server.billing().apiKeys().create("reconcile");
    config = server.config().dataDir().resolve("gpumeter.properties");
    Files.writeString(
        config,
        "data.dir="
            + server.config().dataDir()
            + "\ndb.binary_cache_dir="
            + TestServers.binaryCache()
            + "\n");
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
  @Timeout(90)
  void mixedLoadReconcilesToZeroThroughTheAdminEndpoint() throws Exception {
    from = Instant.now();
    // Clients that leave mid-generation: cancelled, charged for the steps they took part in.
    List<Socket> leaving = new ArrayList<>();
    for (int i = 0; i < DISCONNECTS; i++) {
      leaving.add(rawCompletion(FaultSupport.completion("Leaving " + i + " ", 1000)));
    }
    await(
        () -> server.schedulers().get(0).stats().running() == DISCONNECTS,
        Duration.ofSeconds(30),
        "the leaving clients' generations to run");
    long stepsTogether = server.schedulers().get(0).stats().steps();
    await(
        () -> server.schedulers().get(0).stats().steps() >= stepsTogether + 2,
        Duration.ofSeconds(30),
        "the leaving clients' generations to take steps");
    for (Socket s : leaving) {
      // A reset: a disconnect the server can see. A plain close() is a FIN, which the server
      // treats as a half-close and answers (see ApiHandler).
      s.setSoLinger(true, 0);
      s.close();
    }
    // Short ones finish; long ones run past the 500 ms request timeout (504, charged).
    List<CompletableFuture<Reply>> shortOnes = new ArrayList<>();
    List<CompletableFuture<Reply>> longOnes = new ArrayList<>();
    for (int i = 0; i < LONG; i++) {
      longOnes.add(
          client.postAsync(
              "/v1/completions",
              key.plaintext(),
              FaultSupport.completion("Long " + i + " ", 1000)));
    }
    for (int i = 0; i < SHORT; i++) {
      shortOnes.add(
          client.postAsync(
              "/v1/completions", key.plaintext(), FaultSupport.completion("Short " + i + " ", 6)));
    }
    for (CompletableFuture<Reply> f : shortOnes) {
      Reply r = f.get(60, TimeUnit.SECONDS);
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
    }
    for (CompletableFuture<Reply> f : longOnes) {
      Reply r = f.get(60, TimeUnit.SECONDS);
      assertThat(r.status()).as(r.toString()).isEqualTo(504);
      assertThat(r.json().get("error").get("code").asText()).isEqualTo("timeout");
    }
    int expected = SHORT + LONG + DISCONNECTS;
    await(
        () -> statuses().values().stream().mapToInt(Integer::intValue).sum() == expected,
        Duration.ofSeconds(30),
        expected + " records in the ledger");
    assertThat(statuses())
        .isEqualTo(Map.of("ok", SHORT, "timeout", LONG, "cancelled", DISCONNECTS));
    to = Instant.now();

    // Admin API: token required; API keys are not admin tokens.
    String path = "/admin/reconcile?from=" + from + "&to=" + to;
    Reply anonymous = client.get(path, null);
    assertThat(anonymous.status()).isEqualTo(401);
    assertThat(anonymous.json().get("error").get("code").asText()).isEqualTo("missing_admin_token");
    Reply apiKey = client.get(path, key.plaintext());
    assertThat(apiKey.status()).isEqualTo(401);
    assertThat(apiKey.json().get("error").get("code").asText()).isEqualTo("invalid_admin_token");
    Reply backwards = client.get("/admin/reconcile?from=" + to + "&to=" + from, TOKEN);
    assertThat(backwards.status()).as(backwards.toString()).isEqualTo(400);

    Reply r = client.get(path, TOKEN);
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    JsonNode report = r.json();
    System.out.println(report.get("text").asText());
    assertThat(report.get("exact").asBoolean()).as(r.toString()).isTrue();
    assertThat(report.get("total_drift_ns").asLong()).as(r.toString()).isZero();
    assertThat(report.get("balanced").asBoolean()).as(r.toString()).isTrue();
    // one line per served model: the bundled demo-byte-lm (all the traffic) and tiny-llama-bpe
    // (its load and warm-up only)
    assertThat(report.get("lines")).hasSize(2);
    JsonNode line = FaultSupport.lineOf(report, FaultSupport.MODEL);
    assertThat(line.get("model").asText()).isEqualTo(FaultSupport.MODEL);
    assertThat(line.get("device").asText()).isEqualTo("cpu");
    assertThat(line.get("records").asLong()).isEqualTo(expected);
    assertThat(line.get("charged_ns").asLong())
        .isPositive()
        .isEqualTo(line.get("ledger_ns").asLong());
    assertThat(line.get("drift_ns").asLong()).isZero();
    assertThat(line.get("unattributed_ns").asLong()).isZero();
    assertThat(line.get("steps").asLong()).isPositive();

    // Per replica: this server is the only one, under the id /readyz shows; its drift is 0.
    String replica = client.get("/readyz", null).json().get("ledger_replica").asText();
    assertThat(report.get("replicas")).as(r.toString()).hasSize(1);
    JsonNode own = report.get("replicas").get(0);
    assertThat(own.get("replica").asText()).isEqualTo(replica);
    assertThat(own.get("drift_ns").asLong()).isZero();
    assertThat(own.get("unattributed_ns").asLong()).isZero();
    assertThat(own.get("records").asLong()).isEqualTo(expected);
    Reply scoped = client.get(path + "&replica=" + replica, TOKEN);
    assertThat(scoped.status()).as(scoped.toString()).isEqualTo(200);
    assertThat(scoped.json().get("replica").asText()).isEqualTo(replica);
    assertThat(scoped.json().get("total_drift_ns").asLong()).isZero();
    assertThat(FaultSupport.lineOf(scoped.json(), FaultSupport.MODEL).get("records").asLong())
        .isEqualTo(expected);
    // another replica's id: nothing of this server's
    Reply other = client.get(path + "&replica=" + java.util.UUID.randomUUID(), TOKEN);
    assertThat(other.status()).isEqualTo(200);
    assertThat(other.json().get("lines")).isEmpty();
    assertThat(other.json().get("replicas")).isEmpty();
    // not a replica id: 400 naming the parameter
    Reply bad = client.get(path + "&replica=replica-1", TOKEN);
    assertThat(bad.status()).as(bad.toString()).isEqualTo(400);
    assertThat(bad.json().get("error").get("type").asText()).isEqualTo("invalid_request_error");
    assertThat(bad.json().get("error").get("param").asText()).isEqualTo("replica");
  }

  @Test
  @Order(2)
  @Timeout(60)
  void reconcileAndCreateKeyRunBesideTheServer() throws Exception {
    // The recorder was flushed by the admin call above; the tool reads the same database.
    Cli ok = cli("reconcile", "--from", from.toString(), "--to", to.toString());
    assertThat(ok.status()).as(ok.toString()).isZero();
    assertThat(ok.out()).contains(FaultSupport.MODEL).contains("total drift_ns: 0\n");

    Cli created = cli("create-key", "--account", "beside-the-server");
    assertThat(created.status()).as(created.toString()).isZero();
    Reply models = client.get("/v1/models", created.out().trim());
    assertThat(models.status()).as(models.toString()).isEqualTo(200);
    assertThat(server.isReady()).isTrue();

    // A charge that no metered step accounts for: negative drift, exit status 3.
    Instant past = Instant.now().minus(Duration.ofHours(3));
    UsageRecord orphan =
        new UsageRecord(
            "cmpl-reconcile-orphan",
            key.keyId(),
            key.accountId(),
            FaultSupport.MODEL,
            TimerInfo.cpu("test"),
            "tokens",
            1_000,
            400,
            600,
            3,
            2,
            0,
            2,
            UsageStatus.OK,
            past.minusMillis(20),
            past);
    server.billing().ledger().publish(orphan).get(10, TimeUnit.SECONDS);
    Cli drift =
        cli(
            "reconcile",
            "--from",
            past.minus(Duration.ofMinutes(5)).toString(),
            "--to",
            past.plus(Duration.ofMinutes(5)).toString());
    assertThat(drift.status()).as(drift.toString()).isEqualTo(Main.EXIT_DRIFT);
    assertThat(drift.out()).contains("total drift_ns: -1000");
    assertThat(drift.err()).contains("Drift");
  }

  record Cli(int status, String out, String err) {}

  private static Cli cli(String... args) throws Exception {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    String[] all = new String[args.length + 2];
    System.arraycopy(args, 0, all, 0, args.length);
    all[args.length] = "--config";
    all[args.length + 1] = config.toString();
    int status =
        Main.run(
            all,
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8));
    return new Cli(
        status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }

  /** A completion sent over a raw socket, left open; the caller closes it to disconnect. */
  private static Socket rawCompletion(String body) throws Exception {
    Socket s = new Socket("127.0.0.1", server.port());
    OutputStream out = s.getOutputStream();
    byte[] b = body.getBytes(StandardCharsets.UTF_8);
    out.write(
        ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + key.plaintext()
                + "\r\nContent-Type: application/json\r\nContent-Length: "
                + b.length
                + "\r\n\r\n")
            .getBytes(StandardCharsets.US_ASCII));
    out.write(b);
    out.flush();
    return s;
  }

  /** status → records of the test key. */
  private static Map<String, Integer> statuses() {
    Map<String, Integer> out = new TreeMap<>();
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT status, count(*) FROM usage_records WHERE api_key_id = ? GROUP BY status")) {
      ps.setLong(1, key.keyId());
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          out.put(rs.getString(1), rs.getInt(2));
        }
      }
    } catch (Exception e) {
      throw new AssertionError(e);
    }
    return out;
  }
}
