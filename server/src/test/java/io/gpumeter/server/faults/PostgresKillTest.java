package io.gpumeter.server.faults;

import static io.gpumeter.server.faults.FaultSupport.await;
import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.LedgerHealth;
import io.gpumeter.billing.db.Database;
import io.gpumeter.server.GpumeterServer;
import io.gpumeter.server.TestServers;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import io.gpumeter.server.faults.FaultSupport.Load;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * SIGKILL of PostgreSQL in the middle of a load of completions: the server (in this JVM) keeps
 * answering, its charges go to the outbox and are replayed when PostgreSQL is back, and every
 * request that got a 200 is in the ledger exactly once.
 */
class PostgresKillTest {
  @TempDir Path tmp;

  /** {@code ledger.commit_point}; {@link LocalCommitPostgresKillTest} runs it with local. */
  String commitPoint() {
    return "postgres";
  }

  @Test
  @Timeout(120)
  void everyAnsweredCompletionIsChargedOnceAcrossAPostgresCrash() throws Exception {
    int pgPort = FaultSupport.freePort();
    Database pg = FaultSupport.startPostgres(tmp.resolve("pg"), pgPort);
    GpumeterServer server = null;
    try {
      server =
          GpumeterServer.start(
              TestServers.config("pgkill")
                  .set("db.url", FaultSupport.jdbcUrl(tmp.resolve("pg"), pgPort))
                  .set("db.user", "postgres")
                  .set("ledger.commit_point", commitPoint())
                  .build(),
              StepListener.NONE);
      CreatedApiKey key = server.billing().apiKeys().create("pgkill");
      Client client = new Client(server.port());
      Reply warm =
          client.post("/v1/completions", key.plaintext(), FaultSupport.completion("Hi ", 2));
      assertThat(warm.status()).as(warm.toString()).isEqualTo(200); // and the key is now cached

      Load load = new Load(server.port(), key.plaintext(), 8, 4).start();
      await(() -> load.count(200) >= 20, Duration.ofSeconds(60), "20 answered completions");
      long beforeKill = load.count(200);
      FaultSupport.killPostgres(pg);

      // Degraded, not down: /readyz stays 200 and says why.
      GpumeterServer s = server;
      await(() -> s.billing().health().degraded(), Duration.ofSeconds(15), "the breaker to open");
      Reply ready = client.get("/readyz", null);
      assertThat(ready.status()).as(ready.toString()).isEqualTo(200);
      assertThat(ready.json().get("degraded").asBoolean()).as(ready.toString()).isTrue();
      boolean local = commitPoint().equals("local");
      // local: the log keeps the charges and the shipper's failures are the degradation
      assertThat(ready.json().get("reason").asText()).contains(local ? "commit log" : "outbox");
      long atOutage = load.count(200);
      await(
          () -> load.count(200) >= atOutage + 20,
          Duration.ofSeconds(60),
          "20 completions answered while PostgreSQL is down");
      long duringOutage = load.count(200) - atOutage;

      assertThat(pg.ensureEmbeddedRunning()).isTrue(); // same folder, same port
      long atRestart = load.count(200);
      await(
          () -> load.count(200) >= atRestart + 20,
          Duration.ofSeconds(60),
          "20 completions answered after PostgreSQL is back");
      load.stop();

      await(
          () ->
              s.billing().health().outboxBytes() == 0
                  && s.billing().unshippedRecords() == 0
                  && !s.billing().health().degraded(),
          Duration.ofSeconds(60),
          "the outbox to be replayed: " + s.billing().health());
      LedgerHealth health = server.billing().health();

      List<String> ok = load.idsWithStatus(200);
      Set<String> okIds = new HashSet<>(ok);
      assertThat(okIds).as("request ids are unique").hasSameSizeAs(ok);
      assertThat(okIds).doesNotContainNull();
      Map<String, Integer> rows = FaultSupport.rowsOfKey(pg.dataSource(), key.keyId());
      System.out.printf(
          "postgres SIGKILL under load: outcomes %s; 200s before kill %d, during outage %d;"
              + " outboxed %d, replayed %d records; %d rows for the key%n",
          load.summary(),
          beforeKill,
          duringOutage,
          health.outboxedRecords(),
          health.replayedRecords(),
          rows.size());

      assertThat(rows.values()).as("no request charged twice").allMatch(n -> n == 1);
      for (String id : okIds) {
        assertThat(rows.get(id)).as("rows for answered request " + id).isEqualTo(1);
      }
      assertThat(duringOutage).as("completions answered while PostgreSQL was down").isPositive();
      if (local) {
        // the log held them while PostgreSQL was down; the outbox is for a failing log disk only
        assertThat(health.outboxedRecords()).as("nothing went to the outbox").isZero();
      } else {
        assertThat(health.outboxedRecords()).as("charges went through the outbox").isPositive();
        assertThat(health.replayedRecords()).isPositive();
      }
      // Charges are never withheld while the outbox has room: no 503, no failed request.
      assertThat(load.count(503)).as("503s: " + load.summary()).isZero();
      assertThat(load.outcomes).allMatch(o -> o.status() == 200, load.summary());
      // Every record of the key is a request the clients saw (+ the warm-up one).
      assertThat(rows.keySet()).containsAll(okIds);
      assertThat(rows).hasSize(okIds.size() + 1);
    } finally {
      if (server != null) {
        server.close();
      }
      pg.close();
    }
  }
}
