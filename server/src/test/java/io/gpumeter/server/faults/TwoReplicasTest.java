package io.gpumeter.server.faults;

import io.gpumeter.billing.db.Database;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Two server processes (two replicas, each with its own data folder and outbox) on one PostgreSQL
 * that the test starts (embedded, fixed port), all on loopback: the {@link TwoReplicaScenario} (a
 * SIGKILL of replica 2 and a restart of PostgreSQL under load; then exactly-once charges, exact
 * rollups, drift 0 overall and per replica, and a revoked key refused by both within 1 s). {@link
 * NetnsReplicasTest} runs the same scenario with each replica on its own network host.
 */
class TwoReplicasTest {
  @TempDir Path tmp;

  @Test
  @Timeout(360)
  void everyAnswerIsChargedOnceAcrossAReplicaKillAndAPostgresRestart() throws Exception {
    int pgPort = FaultSupport.freePort();
    Path pgDir = tmp.resolve("pg");
    Database pg = FaultSupport.startPostgres(pgDir, pgPort);
    try {
      new TwoReplicaScenario(
              tmp, pg, TwoReplicaScenario.loopback(FaultSupport.jdbcUrl(pgDir, pgPort)))
          .run();
    } finally {
      pg.close();
    }
  }
}
