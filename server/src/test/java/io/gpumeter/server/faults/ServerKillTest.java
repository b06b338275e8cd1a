package io.gpumeter.server.faults;

import static io.gpumeter.server.faults.FaultSupport.await;
import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.keys.ApiKeys;
import io.gpumeter.server.TestServers;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import io.gpumeter.server.faults.FaultSupport.Load;
import io.gpumeter.server.faults.FaultSupport.ServerProcess;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The server process itself killed with SIGKILL while PostgreSQL is down, so that the charges of
 * the completions it answered exist only in its outbox: the next server process on the same data
 * folder replays them, and every answered completion is in the ledger exactly once.
 */
class ServerKillTest {
  @TempDir Path tmp;

  /** {@code ledger.commit_point}; {@link LocalCommitServerKillTest} runs this test with local. */
  String commitPoint() {
    return "postgres";
  }

  @Test
  @Timeout(150)
  void chargesInTheOutboxOfAKilledServerReachPostgresOnce() throws Exception {
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
      CreatedApiKey key = new ApiKeys(pg.dataSource()).create("server-kill");
      Set<String> okIds;
      Load load;
      String warmId;
      try {
        first = ServerProcess.start("server-1", settings, "serve");
        int port = first.awaitReady(Duration.ofSeconds(90));
        Client client = new Client(port);
        Reply warm =
            client.post("/v1/completions", key.plaintext(), FaultSupport.completion("Hi ", 2));
        assertThat(warm.status()).as(warm.toString()).isEqualTo(200); // the key is cached now
        warmId = warm.header("x-request-id");

        FaultSupport.killPostgres(pg); // and it stays down until the first server is dead
        load = new Load(port, key.plaintext(), 8, 4).start();
        Load l = load;
        await(() -> l.count(200) >= 150, Duration.ofSeconds(60), "150 answered completions");
        first.kill(); // SIGKILL mid-load: no drain, no close; the outbox is all there is
        load.stop();
      } finally {
        if (first != null) {
          first.kill();
        }
      }
      List<String> ok = load.idsWithStatus(200);
      okIds = new HashSet<>(ok);
      assertThat(okIds).hasSameSizeAs(ok).doesNotContainNull();
      boolean local = commitPoint().equals("local");
      try (Stream<Path> s = Files.list(data.resolve(local ? "commit-log" : "outbox"))) {
        String prefix = local ? "commit-" : "segment-";
        assertThat(s.anyMatch(p -> p.getFileName().toString().startsWith(prefix)))
            .as("the killed server left %s segments", local ? "commit-log" : "outbox")
            .isTrue();
      }

      // PostgreSQL back; a new server process on the same data folder takes over the outbox.
      assertThat(pg.ensureEmbeddedRunning()).isTrue();
      second = ServerProcess.start("server-2", settings, "serve");
      second.awaitReady(Duration.ofSeconds(90));
      await(
          () -> {
            try {
              return FaultSupport.rowCounts(pg.dataSource(), okIds).size() == okIds.size();
            } catch (Exception e) {
              return false;
            }
          },
          Duration.ofSeconds(60),
          "every answered completion to be in PostgreSQL");
      second.terminate();
      assertThat(second.waitFor(Duration.ofSeconds(60))).isIn(0, 143);

      Map<String, Integer> rows = FaultSupport.rowsOfKey(pg.dataSource(), key.keyId());
      System.out.printf(
          "server SIGKILL with PostgreSQL down: outcomes %s; %d answered, %d rows for the key%n",
          load.summary(), okIds.size(), rows.size());
      assertThat(rows.values()).as("no request charged twice").allMatch(n -> n == 1);
      assertThat(rows.keySet()).containsAll(okIds).contains(warmId);
      // Requests cut off by the kill got no answer; their charges may or may not have been
      // made durable before it, so the key may have a few more rows than answers, never fewer.
      long cutOff = load.count(0);
      assertThat(rows.size()).isBetween(okIds.size() + 1, okIds.size() + 1 + (int) cutOff);
      assertThat(load.count(503)).as(load.summary()).isZero();
    } finally {
      if (second != null) {
        second.kill();
      }
      pg.close();
    }
  }
}
