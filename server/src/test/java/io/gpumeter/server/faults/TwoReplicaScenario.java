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

/**
 * The two-replica scenario of {@link TwoReplicasTest} (both replicas and PostgreSQL on loopback)
 * and {@link NetnsReplicasTest} (each replica on its own network host): two server processes, each
 * with its own data folder and outbox, on one PostgreSQL that the test started (embedded, fixed
 * port), under a mixed load of completions on both: replica 2 is killed with SIGKILL and restarted
 * on its folder, PostgreSQL is killed and restarted. Then every answered completion is charged
 * exactly once, the hourly rollup (written by both at once) equals the raw records, {@code
 * reconcile} over the whole run exits 0 with drift 0 overall and per replica (each replica's id,
 * its outbox owner, read from {@code /readyz}; replica 2's restarted process is still replica 2),
 * {@code reconcile --replica} of the killed replica alone too, and a key revoked through replica
 * 1's admin API is refused by replica 2, which had it cached for 60 s, within 1 s.
 */
final class TwoReplicaScenario {
  private static final String ADMIN = "two-replicas-admin-token";

  /** Where the replicas run and how they reach PostgreSQL. */
  interface Hosts {
    /** The IPv4 address replica {@code replica} (1 or 2) listens on, and the client uses. */
    String host(int replica);

    /** What starts a process on replica {@code replica}'s host (empty: this one). */
    List<String> launcher(int replica);

    /** The settings by which a replica reaches PostgreSQL ({@code db.url}, {@code db.user}...). */
    Map<String, String> database();
  }

  /** Both replicas on loopback, reaching PostgreSQL at {@code dbUrl} as its owner. */
  static Hosts loopback(String dbUrl) {
    return new Hosts() {
      @Override
      public String host(int replica) {
        return "127.0.0.1";
      }

      @Override
      public List<String> launcher(int replica) {
        return List.of();
      }

      @Override
      public Map<String, String> database() {
        return Map.of("db.url", dbUrl, "db.user", "postgres");
      }

      @Override
      public String toString() {
        return "two replicas";
      }
    };
  }

  /** A replica's HTTP address. */
  private record Endpoint(String host, int port) {
    URI uri(String path) {
      return URI.create("http://" + host + ":" + port + path);
    }
  }

  private final Path tmp;
  private final Database pg;
  private final Hosts hosts;

  private final HttpClient http =
      HttpClient.newBuilder()
          .version(HttpClient.Version.HTTP_1_1)
          .connectTimeout(Duration.ofSeconds(5))
          .build();

  /**
   * Replicas' folders under {@code tmp}; {@code pg} is the PostgreSQL the test killed and restarts.
   */
  TwoReplicaScenario(Path tmp, Database pg, Hosts hosts) {
    this.tmp = tmp;
    this.pg = pg;
    this.hosts = hosts;
  }

  /** Runs the scenario and its assertions; kills what it started, but not PostgreSQL. */
  void run() throws Exception {
    List<ServerProcess> processes = new ArrayList<>();
    List<Load> loads = new ArrayList<>();
    try {
      ApiKeys keys = new ApiKeys(pg.dataSource());
      CreatedApiKey key = keys.create("replicas");
      CreatedApiKey doomed = keys.create("doomed");
      Instant from = Instant.now().truncatedTo(ChronoUnit.MINUTES);

      ServerProcess one = start(1, "replica-1", "replica-1", processes);
      ServerProcess two = start(2, "replica-2", "replica-2", processes);
      Endpoint p1 = new Endpoint(hosts.host(1), one.awaitReady(Duration.ofMinutes(2)));
      Endpoint p2 = new Endpoint(hosts.host(2), two.awaitReady(Duration.ofMinutes(2)));
      String replica1 = ledgerReplica(p1);
      String replica2 = ledgerReplica(p2);
      assertThat(replica1).as("each replica has its own id").isNotEqualTo(replica2);
      // Each replica reached PostgreSQL from its own host's address (on loopback: 127.0.0.1).
      assertThat(clientAddresses(pg.maintenanceDataSource()))
          .as("addresses PostgreSQL's clients connect from")
          .contains(hosts.host(1), hosts.host(2));

      Load load1 = track(new Load(p1.host(), p1.port(), key.plaintext(), 2, 4).start(), loads);
      Load load2 = track(new Load(p2.host(), p2.port(), key.plaintext(), 2, 4).start(), loads);
      await(
          () -> load1.count(200) >= 10 && load2.count(200) >= 10,
          Duration.ofMinutes(2),
          "10 answered completions on each replica");

      // Replica 2 dies without draining anything, and comes back on its own folder.
      two.kill();
      load2.stop();
      ServerProcess twoAgain = start(2, "replica-2b", "replica-2", processes);
      Endpoint p2b = new Endpoint(hosts.host(2), twoAgain.awaitReady(Duration.ofMinutes(2)));
      assertThat(ledgerReplica(p2b))
          .as("the restarted process on replica 2's folder is replica 2")
          .isEqualTo(replica2);
      Load load2b = track(new Load(p2b.host(), p2b.port(), key.plaintext(), 2, 4).start(), loads);
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
              HttpRequest.newBuilder(p1.uri("/admin/keys/" + doomed.keyId() + "/revoke"))
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
          "%s: answered %s, %d rows for the key, revocation reached replica 2 in %d ms%n",
          hosts, summary, rows.size(), propagation.toMillis());

      ServerProcess reconcile =
          ServerProcess.start(
              "reconcile",
              hosts.launcher(1),
              settings(1, "replica-1"),
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
              hosts.launcher(1),
              settings(1, "replica-1"),
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
    }
  }

  /** Replica {@code replica}'s settings: its host, its data folder {@code folder}, the database. */
  private Map<String, String> settings(int replica, String folder) {
    Map<String, String> s = new HashMap<>(hosts.database());
    s.put("host", hosts.host(replica));
    s.put("port", "0");
    s.put("device", "cpu");
    s.put("models.dir", TestServers.repoRoot().resolve("models").toString());
    s.put("data.dir", tmp.resolve(folder).toString());
    s.put("shutdown.grace", "5s");
    s.put("admin.token", ADMIN);
    s.put("auth.key_cache_ttl", "60s");
    return s;
  }

  private ServerProcess start(
      int replica, String name, String folder, List<ServerProcess> processes)
      throws java.io.IOException {
    ServerProcess p =
        ServerProcess.start(name, hosts.launcher(replica), settings(replica, folder), "serve");
    processes.add(p);
    return p;
  }

  private static Load track(Load l, List<Load> loads) {
    loads.add(l);
    return l;
  }

  private HttpResponse<String> complete(Endpoint at, String key) throws Exception {
    return http.send(
        HttpRequest.newBuilder(at.uri("/v1/completions"))
            .header("Authorization", "Bearer " + key)
            .header("Content-Type", "application/json")
            .timeout(Duration.ofSeconds(30))
            .POST(HttpRequest.BodyPublishers.ofString(FaultSupport.completion("Hi ", 1)))
            .build(),
        HttpResponse.BodyHandlers.ofString());
  }

  /** The status of a request needing the key: GET /v1/models (no generation, no charge). */
  private int status(Endpoint at, String key) {
    try {
      return http.send(
              HttpRequest.newBuilder(at.uri("/v1/models"))
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
  private boolean outboxEmpty(Endpoint at) {
    try {
      HttpResponse<String> r =
          http.send(
              HttpRequest.newBuilder(at.uri("/readyz")).timeout(Duration.ofSeconds(5)).build(),
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
  private String ledgerReplica(Endpoint at) throws Exception {
    HttpResponse<String> r =
        http.send(
            HttpRequest.newBuilder(at.uri("/readyz")).timeout(Duration.ofSeconds(5)).build(),
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

  /** The addresses of PostgreSQL's client connections (as its owner: every session's). */
  private static Set<String> clientAddresses(DataSource owner) throws Exception {
    Set<String> out = new HashSet<>();
    try (Connection c = owner.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT DISTINCT host(client_addr) FROM pg_stat_activity"
                    + " WHERE client_addr IS NOT NULL");
        ResultSet rs = ps.executeQuery()) {
      while (rs.next()) {
        out.add(rs.getString(1));
      }
    }
    return out;
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
