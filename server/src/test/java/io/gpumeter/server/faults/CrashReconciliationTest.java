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
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.Map;
import javax.sql.DataSource;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Crash-consistent reconciliation: the server is killed with SIGKILL under load (sequences in
 * flight, their step time measured and handed out as shares, their charges never stored), a new
 * server starts on the same data folder, and {@code reconcile} over the crash minutes exits 0 with
 * drift 0: measured time was committed with the charges (same transactions), and the successor
 * recorded the dead process's handed-out-but-never-charged time as unbilled (reason crash).
 */
class CrashReconciliationTest {
  @TempDir Path tmp;

  /** {@code ledger.commit_point}; {@link LocalCommitCrashReconciliationTest} runs it with local. */
  String commitPoint() {
    return "postgres";
  }

  @Test
  @Timeout(240)
  void aServerKilledUnderLoadReconcilesWithZeroDriftAfterARestart() throws Exception {
    int pgPort = FaultSupport.freePort();
    Database pg = FaultSupport.startPostgres(tmp.resolve("pg"), pgPort);
    Path data = tmp.resolve("server-data");
    Map<String, String> settings =
        Map.of(
            "host", "127.0.0.1",
            "port", "0",
            "device", "cpu",
            "models.dir", TestServers.repoRoot().resolve("models").toString(),
            "data.dir", data.toString(),
            "db.url", FaultSupport.jdbcUrl(tmp.resolve("pg"), pgPort),
            "db.user", "postgres",
            "shutdown.grace", "5s",
            "ledger.commit_point", commitPoint());
    ServerProcess first = null;
    ServerProcess second = null;
    try {
      CreatedApiKey key = new ApiKeys(pg.dataSource()).create("crash-reconcile");
      Instant from = Instant.now().truncatedTo(ChronoUnit.MINUTES);
      Load load;
      Load shortLoad;
      try {
        first = ServerProcess.start("server-1", settings, "serve");
        int port = first.awaitReady(Duration.ofSeconds(90));
        // Long and short generations side by side: the short ones finish (and commit batches,
        // with the measured time of every step so far) while the long ones are mid-generation,
        // so the sequences in flight at the kill hold shares that are durable but never charged.
        // (Clients in lockstep would all finish in the same step and leave nothing in flight
        // that a commit saw.)
        load = new Load(port, key.plaintext(), 4, 128).start();
        shortLoad = new Load(port, key.plaintext(), 4, 3).start();
        Load l = load;
        Load sl = shortLoad;
        await(() -> l.count(200) >= 8, Duration.ofSeconds(90), "8 answered long completions");
        // Kill on the short clients' clock, not the long ones': the long clients run in rounds,
        // and a kill right after a round was answered would find nothing of the next one durable.
        long shortSoFar = sl.count(200);
        await(
            () -> sl.count(200) >= shortSoFar + 8,
            Duration.ofSeconds(60),
            "8 more short completions");
        first.kill(); // SIGKILL: nothing drained, flushed or closed
        load.stop();
        shortLoad.stop();
      } finally {
        if (first != null) {
          first.kill();
        }
      }
      assertThat(load.count(200)).isGreaterThanOrEqualTo(8);

      second = ServerProcess.start("server-2", settings, "serve");
      second.awaitReady(Duration.ofSeconds(90));
      await(
          () -> settledRows(pg.dataSource()) > 0,
          Duration.ofSeconds(60),
          "the new server to settle the killed one's accrual");
      second.terminate();
      assertThat(second.waitFor(Duration.ofSeconds(60))).isIn(0, 143);
      Instant to = Instant.now().truncatedTo(ChronoUnit.MINUTES).plus(1, ChronoUnit.MINUTES);

      long unbilled = unbilledCrashNs(pg.dataSource());
      System.out.println(
          "ledger_accrual:\n" + rows(pg.dataSource(), "SELECT * FROM ledger_accrual"));
      System.out.printf(
          "server SIGKILL under load: outcomes %s (long), %s (short); %d ns unbilled (crash)%n",
          load.summary(), shortLoad.summary(), unbilled);
      assertThat(unbilled)
          .as("device time handed out to sequences in flight at the kill is unbilled, not lost")
          .isPositive();

      ServerProcess reconcile =
          ServerProcess.start(
              "reconcile", settings, "reconcile", "--from", from.toString(), "--to", to.toString());
      int status = reconcile.waitFor(Duration.ofSeconds(90));
      String out = reconcile.output();
      assertThat(status)
          .as("reconcile's exit status (%d: drift)\n%s", Main.EXIT_DRIFT, out)
          .isZero();
      assertThat(out).contains(FaultSupport.MODEL).contains("total drift_ns: 0");
      assertThat(out).contains("(exact: drift must be 0)");
    } finally {
      if (second != null) {
        second.kill();
      }
      pg.close();
    }
  }

  private static long settledRows(DataSource ds) {
    try {
      return single(ds, "SELECT count(*) FROM ledger_accrual WHERE settled_at IS NOT NULL");
    } catch (AssertionError e) {
      return 0; // the new server may still be migrating: asked again until the deadline
    }
  }

  private static long unbilledCrashNs(DataSource ds) {
    return single(
        ds, "SELECT coalesce(sum(unbilled_ns), 0)::int8 FROM unbilled_time WHERE reason = 'crash'");
  }

  private static String rows(DataSource ds, String sql) {
    StringBuilder sb = new StringBuilder();
    try (Connection c = ds.getConnection();
        PreparedStatement ps = c.prepareStatement(sql);
        ResultSet rs = ps.executeQuery()) {
      int n = rs.getMetaData().getColumnCount();
      while (rs.next()) {
        for (int i = 1; i <= n; i++) {
          sb.append(rs.getString(i)).append(i < n ? " | " : "\n");
        }
      }
    } catch (Exception e) {
      throw new AssertionError(sql, e);
    }
    return sb.toString();
  }

  private static long single(DataSource ds, String sql) {
    try (Connection c = ds.getConnection();
        PreparedStatement ps = c.prepareStatement(sql);
        ResultSet rs = ps.executeQuery()) {
      rs.next();
      return rs.getLong(1);
    } catch (Exception e) {
      throw new AssertionError(sql, e);
    }
  }
}
