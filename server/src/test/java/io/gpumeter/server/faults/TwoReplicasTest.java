package io.gpumeter.server.faults;

import static io.gpumeter.server.faults.FaultSupport.await;
import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.keys.ApiKeys;
import io.gpumeter.server.Main;
import io.gpumeter.server.TestServers;
import io.gpumeter.server.faults.FaultSupport.Load;
import io.gpumeter.server.faults.FaultSupport.ServerProcess;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import javax.sql.DataSource;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Two server processes (two replicas, each with its own data folder and outbox) on one PostgreSQL
 * that the test starts (embedded, fixed port), under a mixed load of completions on both: replica 2
 * is killed with SIGKILL and restarted on its folder, PostgreSQL is killed and restarted. Then
 * every answered completion is charged exactly once, the hourly rollup (written by both at once)
 * equals the raw records, {@code reconcile} over the whole run exits 0 with drift 0 overall and per
 * replica (each replica's id, its outbox owner, read from {@code /readyz}; replica 2's restarted
 * process is still replica 2), {@code reconcile --replica} of the killed replica alone too, and a
 * key revoked through replica 1's admin API is refused by replica 2, which had it cached for 60 s,
 * within 1 s.
 */
class TwoReplicasTest {
  private static final String ADMIN = "two-replicas-admin-token";

  @TempDir Path tmp;

  private final HttpClient http =
      HttpClient.newBuilder()
          .version(HttpClient.Version.HTTP_1_1)
          .connectTimeout(Duration.ofSeconds(5))
          .build();

  @Test
  @Timeout(360)
  void everyAnswerIsChargedOnceAcrossAReplicaKillAndAPostgresRestart() throws Exception {
    int pgPort = FaultSupport.freePort();
    Path pgDir = tmp.resolve("pg");
    Database pg = FaultSupport.startPostgres(pgDir, pgPort);
    String dbUrl = FaultSupport.jdbcUrl(pgDir, pgPort);
    List<ServerProcess> processes = new ArrayList<>();
    List<Load> loads = new ArrayList<>();
    try {
      ApiKeys keys = new ApiKeys(pg.dataSource());
      CreatedApiKey key = keys.create("replicas");
      CreatedApiKey doomed = keys.create("doomed");
      Instant from = Instant.now().truncatedTo(ChronoUnit.MINUTES);

      ServerProcess one = start("replica-1", settings("replica-1", dbUrl), processes);
      ServerProcess two = start("replica-2", settings("replica-2", dbUrl), processes);
      int p1 = one.awaitReady(Duration.ofMinutes(2));
      int p2 = two.awaitReady(Duration.ofMinutes(2));
      String replica1 = ledgerReplica(p1);
      String replica2 = ledgerReplica(p2);
      assertThat(replica1).as("each replica has its own id").isNotEqualTo(replica2);

      Load load1 = track(new Load(p1, key.plaintext(), 2, 4).start(), loads);
      Load load2 = track(new Load(p2, key.plaintext(), 2, 4).start(), loads);
      await(
          () -> load1.count(200) >= 10 && load2.count(200) >= 10,
          Duration.ofMinutes(2),
          "10 answered completions on each replica");

      // Replica 2 dies without draining anything, and comes back on its own folder.
      two.kill();
      load2.stop();
      ServerProcess twoAgain = start("replica-2b", settings("replica-2", dbUrl), processes);
      int p2b = twoAgain.awaitReady(Duration.ofMinutes(2));
      assertThat(ledgerReplica(p2b))
          .as("the restarted process on replica 2's folder is replica 2")
          .isEqualTo(replica2);
      Load load2b = track(new Load(p2b, key.plaintext(), 2, 4).start(), loads);
      await(() -> load2b.count(200) >= 5, Duration.ofMinutes(2), "replica 2 serving again");

      // PostgreSQL dies and comes back on the same folder and port; the replicas outbox meanwhile.
      FaultSupport.killPostgres(pg);
      long at1 = load1.count(200);
      long at2 = load2b.count(200);
      await(
          () -> load1.count(200) >= at1 + 5 && load2b.count(200) >= at2 + 5,
          Duration.ofMinutes(2),
          "completions answered on both replicas while PostgreSQL is down");
      assertThat(pg.ensureEmbeddedRunning()).isTrue();
      long back1 = load1.count(200);
      long back2 = load2b.count(200);
      await(
          () -> load1.count(200) >= back1 + 5 && load2b.count(200) >= back2 + 5,
          Duration.ofMinutes(2),
          "completions answered on both replicas after PostgreSQL is back");

      // A key both replicas have cached (60 s), revoked through replica 1.
      assertThat(complete(p1, doomed.plaintext()).statusCode()).isEqualTo(200);
      assertThat(complete(p2b, doomed.plaintext()).statusCode()).isEqualTo(200);
      HttpResponse<String> revoked =
          http.send(
              HttpRequest.newBuilder(
                      URI.create(
                          "http://127.0.0.1:" + p1 + "/admin/keys/" + doomed.keyId() + "/revoke"))
                  .header("Authorization", "Bearer " + ADMIN)
                  .POST(HttpRequest.BodyPublishers.noBody())
                  .build(),
              HttpResponse.BodyHandlers.ofString());
      long t0 = System.nanoTime();
      assertThat(revoked.statusCode()).as(revoked.body()).isEqualTo(200);
      assertThat(complete(p1, doomed.plaintext()).statusCode()).isEqualTo(401);
      await(
          () -> status(p2b, doomed.plaintext()) == 401,
          Duration.ofSeconds(1),
          "replica 2 to refuse the key revoked on replica 1");
      Duration propagation = Duration.ofNanos(System.nanoTime() - t0);

      for (Load l : loads) {
        l.stop();
      }
      // Both outboxes replayed (charges and the measured time that rides with them) before the
      // replicas stop: what a stopped replica still holds is replayed only at its next start.
      await(
          () -> outboxEmpty(p1) && outboxEmpty(p2b),
          Duration.ofSeconds(90),
          "both replicas to replay their outboxes");
      await(
          () -> settledAccruals(pg.dataSource()) > 0,
          Duration.ofSeconds(60),
          "replica 2 to settle what its killed process left");
      one.terminate();
      twoAgain.terminate();
      assertThat(one.waitFor(Duration.ofSeconds(90))).isIn(0, 143);
      assertThat(twoAgain.waitFor(Duration.ofSeconds(90))).isIn(0, 143);
      Instant to = Instant.now().truncatedTo(ChronoUnit.MINUTES).plus(1, ChronoUnit.MINUTES);

      // Every answered completion, on either replica, is charged exactly once.
      List<String> ok = new ArrayList<>();
      for (Load l : loads) {
        ok.addAll(l.idsWithStatus(200));
      }
      Set<String> okIds = new HashSet<>(ok);
      assertThat(okIds).as("request ids are unique across replicas").hasSameSizeAs(ok);
      Map<String, Integer> rows = FaultSupport.rowsOfKey(pg.dataSource(), key.keyId());
      assertThat(rows.values()).as("no request charged twice").allMatch(n -> n == 1);
      for (String id : okIds) {
        assertThat(rows.get(id)).as("rows for answered request " + id).isEqualTo(1);
      }
      // The hourly rollup, upserted by two writers at once, adds up to the raw records exactly.
      assertThat(
              sums(
                  pg.dataSource(),
                  "SELECT coalesce(sum(requests), 0)::int8, coalesce(sum(device_ns), 0)::int8"
                      + " FROM usage_hourly WHERE api_key_id = ?",
                  key.keyId()))
          .as("usage_hourly (requests, device_ns) against usage_records")
          .containsExactly(
              sums(
                  pg.dataSource(),
                  "SELECT count(*), coalesce(sum(device_ns), 0)::int8"
                      + " FROM usage_records WHERE api_key_id = ?",
                  key.keyId()));
      Map<String, Integer> summary = new HashMap<>();
      for (int i = 0; i < loads.size(); i++) {
        summary.put("load" + i, (int) loads.get(i).count(200));
      }
      System.out.printf(
          "two replicas: answered %s, %d rows for the key, revocation reached replica 2 in %d ms%n",
          summary, rows.size(), propagation.toMillis());

      ServerProcess reconcile =
          ServerProcess.start(
              "reconcile",
              settings("replica-1", dbUrl),
              "reconcile",
              "--from",
              from.toString(),
              "--to",
              to.toString());
      int status = reconcile.waitFor(Duration.ofMinutes(2));
      String out = reconcile.output();
      assertThat(status)
          .as("reconcile's exit status (%d: drift)\n%s", Main.EXIT_DRIFT, out)
          .isZero();
      assertThat(out).contains("total drift_ns: 0");
      // Drift per replica: each replica's charges against the time its own processes measured
      // (replica 2's killed process's unstored shares settled as unbilled in replica 2's minutes).
      Map<String, long[]> perReplica = replicaRows(out);
      assertThat(perReplica).as(out).containsOnlyKeys(replica1, replica2);
      for (Map.Entry<String, long[]> r : perReplica.entrySet()) {
        assertThat(r.getValue()[4]).as("drift_ns of replica %s\n%s", r.getKey(), out).isZero();
        assertThat(r.getValue()[5]).as("records of replica %s", r.getKey()).isPositive();
      }
      // ... and reconcile --replica for the killed one alone.
      ServerProcess reconcile2 =
          ServerProcess.start(
              "reconcile-replica-2",
              settings("replica-1", dbUrl),
              "reconcile",
              "--from",
              from.toString(),
              "--to",
              to.toString(),
              "--replica",
              replica2);
      int status2 = reconcile2.waitFor(Duration.ofMinutes(2));
      String out2 = reconcile2.output();
      assertThat(status2).as("reconcile --replica %s\n%s", replica2, out2).isZero();
      assertThat(replicaRows(out2)).containsOnlyKeys(replica2);
      assertThat(out2).contains("of replica " + replica2).contains("total drift_ns: 0");
    } finally {
      for (Load l : loads) {
        l.stop();
      }
      for (ServerProcess p : processes) {
        p.kill();
      }
      pg.close();
    }
  }

  private Map<String, String> settings(String name, String dbUrl) {
    return Map.of(
        "host", "127.0.0.1",
        "port", "0",
        "device", "cpu",
        "models.dir", TestServers.repoRoot().resolve("models").toString(),
        "data.dir", tmp.resolve(name).toString(),
        "db.url", dbUrl,
        "db.user", "postgres",
        "shutdown.grace", "5s",
        "admin.token", ADMIN,
        "auth.key_cache_ttl", "60s");
  }

  private static ServerProcess start(
      String name, Map<String, String> settings, List<ServerProcess> processes)
      throws java.io.IOException {
    ServerProcess p = ServerProcess.start(name, settings, "serve");
    processes.add(p);
    return p;
  }

  private static Load track(Load l, List<Load> loads) {
    loads.add(l);
    return l;
  }

  private HttpResponse<String> complete(int port, String key) throws Exception {
    return http.send(
        HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/v1/completions"))
            .header("Authorization", "Bearer " + key)
            .header("Content-Type", "application/json")
            .timeout(Duration.ofSeconds(30))
            .POST(HttpRequest.BodyPublishers.ofString(FaultSupport.completion("Hi ", 1)))
            .build(),
        HttpResponse.BodyHandlers.ofString());
  }

  /** The status of a request needing the key: GET /v1/models (no generation, no charge). */
  private int status(int port, String key) {
    try {
      return http.send(
              HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/v1/models"))
                  .header("Authorization", "Bearer " + key)
                  .timeout(Duration.ofSeconds(5))
                  .build(),
              HttpResponse.BodyHandlers.ofString())
          .statusCode();
    } catch (Exception e) {
      return -1;
    }
  }

  private static long[] sums(DataSource ds, String sql, long keyId) throws Exception {
    try (Connection c = ds.getConnection();
        PreparedStatement ps = c.prepareStatement(sql)) {
      ps.setLong(1, keyId);
      try (ResultSet rs = ps.executeQuery()) {
        assertThat(rs.next()).isTrue();
        return new long[] {rs.getLong(1), rs.getLong(2)};
      }
    }
  }

  /** /readyz says the replica's outbox is empty and it is not degraded. */
  private boolean outboxEmpty(int port) {
    try {
      HttpResponse<String> r =
          http.send(
              HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/readyz"))
                  .timeout(Duration.ofSeconds(5))
                  .build(),
              HttpResponse.BodyHandlers.ofString());
      com.fasterxml.jackson.databind.JsonNode json = FaultSupport.MAPPER.readTree(r.body());
      return r.statusCode() == 200
          && !json.path("degraded").asBoolean(true)
          && json.path("ledger").path("outbox_bytes").asLong(-1) == 0;
    } catch (Exception e) {
      return false;
    }
  }

  /** This replica's id in the ledger, from /readyz. */
  private String ledgerReplica(int port) throws Exception {
    HttpResponse<String> r =
        http.send(
            HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/readyz"))
                .timeout(Duration.ofSeconds(5))
                .build(),
            HttpResponse.BodyHandlers.ofString());
    String id = FaultSupport.MAPPER.readTree(r.body()).path("ledger_replica").asText("");
    assertThat(id).as(r.body()).matches("[0-9a-f-]{36}");
    return id;
  }

  private static final java.util.regex.Pattern REPLICA_ROW =
      java.util.regex.Pattern.compile(
          "(?m)^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
              + "\\s+(-?\\d+)\\s+(-?\\d+)\\s+(-?\\d+)\\s+(-?\\d+)\\s+(-?\\d+)\\s+(\\d+)\\s*$");

  /**
   * The per-replica rows of {@code reconcile}'s table: replica → measured, charged, unbilled,
   * ledger, drift, records.
   */
  private static Map<String, long[]> replicaRows(String out) {
    Map<String, long[]> rows = new HashMap<>();
    java.util.regex.Matcher m = REPLICA_ROW.matcher(out);
    while (m.find()) {
      long[] v = new long[6];
      for (int i = 0; i < 6; i++) {
        v[i] = Long.parseLong(m.group(i + 2));
      }
      rows.put(m.group(1), v);
    }
    return rows;
  }

  private static long settledAccruals(DataSource ds) {
    try (Connection c = ds.getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT count(*) FROM ledger_accrual WHERE settled_at IS NOT NULL");
        ResultSet rs = ps.executeQuery()) {
      rs.next();
      return rs.getLong(1);
    } catch (Exception e) {
      return 0; // PostgreSQL may be restarting: asked again until the deadline
    }
  }
}
