package io.gpumeter.server.faults;

import static io.gpumeter.server.faults.FaultSupport.await;
import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.db.Database;
import io.gpumeter.server.GpumeterServer;
import io.gpumeter.server.TestServers;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * PostgreSQL down and a small outbox ({@code outbox.max_bytes=4k}): completions are answered while
 * the outbox takes their charges; once it is full, new completions get 503 {@code
 * billing_unavailable} saying why, {@code /readyz} is 503 with the reason, and nothing unmetered is
 * served. When PostgreSQL returns, every completion answered before is in the ledger once and the
 * server takes work again.
 */
class OutboxFullTest {
  @TempDir Path tmp;

  @Test
  @Timeout(120)
  void aFullOutboxRefusesNewWorkAndLosesNothingAccepted() throws Exception {
    int pgPort = FaultSupport.freePort();
    Database pg = FaultSupport.startPostgres(tmp.resolve("pg"), pgPort);
    GpumeterServer server = null;
    try {
      // the outbox's contract: pinned to postgres (with the local commit point the
      // log keeps charges while PostgreSQL is down: LocalCommitLogFullTest)
      server =
          GpumeterServer.start(
              TestServers.config("outbox-full")
                  .set("db.url", FaultSupport.jdbcUrl(tmp.resolve("pg"), pgPort))
                  .set("db.user", "postgres")
                  .set("outbox.max_bytes", "4k")
                  .set("ledger.commit_point", "postgres")
                  .build(),
              StepListener.NONE);
      GpumeterServer s = server;
      CreatedApiKey key = server.billing().apiKeys().create("outbox-full");
      Client client = new Client(server.port());
      List<String> answered = new ArrayList<>();
      Reply warm =
          client.post("/v1/completions", key.plaintext(), FaultSupport.completion("Hi ", 2));
      assertThat(warm.status()).as(warm.toString()).isEqualTo(200);
      answered.add(warm.header("x-request-id"));

      FaultSupport.killPostgres(pg);
      int answeredWhileDown = 0;
      Reply refused = null;
      for (int i = 0; i < 200 && refused == null; i++) {
        Reply r =
            client.post("/v1/completions", key.plaintext(), FaultSupport.completion("Hi " + i, 3));
        if (r.status() == 200) {
          answered.add(r.header("x-request-id"));
          answeredWhileDown++;
        } else {
          assertThat(r.status()).as(r.toString()).isEqualTo(503);
          assertThat(r.json().get("error").get("code").asText()).isEqualTo("billing_unavailable");
          refused = r;
        }
      }
      assertThat(answeredWhileDown).as("answered while the outbox had room").isPositive();
      assertThat(refused).as("a completion refused once the outbox is full").isNotNull();
      // The outbox refusing is sticky until PostgreSQL returns: from now on, refused up front.
      Reply next =
          client.post("/v1/completions", key.plaintext(), FaultSupport.completion("Hi ", 3));
      assertThat(next.status()).as(next.toString()).isEqualTo(503);
      assertThat(next.header("Retry-After")).isNotNull();
      String message = next.json().get("error").get("message").asText();
      assertThat(message).contains("outbox is full").contains("Nothing was generated or charged");
      assertThat(next.json().get("error").get("type").asText()).isEqualTo("server_error");

      Reply ready = client.get("/readyz", null);
      assertThat(ready.status()).as(ready.toString()).isEqualTo(503);
      assertThat(ready.json().get("status").asText()).isEqualTo("not_ready");
      assertThat(ready.json().get("reason").asText())
          .contains("billing database is unavailable")
          .contains("outbox is full");
      assertThat(client.get("/metrics", null).raw().body())
          .contains("gpumeter_ledger_accepting 0.0\n");
      System.out.printf(
          "outbox full: %d completions answered with PostgreSQL down, then %s%n",
          answeredWhileDown, refused);

      assertThat(pg.ensureEmbeddedRunning()).isTrue();
      await(
          () -> s.billing().health().outboxBytes() == 0 && s.billing().canAcceptWork(),
          Duration.ofSeconds(60),
          "the outbox to be replayed: " + s.billing().health());
      Map<String, Integer> rows = FaultSupport.rowsOfKey(pg.dataSource(), key.keyId());
      assertThat(rows.values()).as("no request charged twice").allMatch(n -> n == 1);
      assertThat(rows.keySet()).containsAll(answered);

      Reply again =
          client.post("/v1/completions", key.plaintext(), FaultSupport.completion("Hi ", 3));
      assertThat(again.status()).as(again.toString()).isEqualTo(200);
      Reply readyAgain = client.get("/readyz", null);
      assertThat(readyAgain.status()).as(readyAgain.toString()).isEqualTo(200);
      assertThat(readyAgain.json().get("degraded").asBoolean()).isFalse();
    } finally {
      if (server != null) {
        server.close();
      }
      pg.close();
    }
  }
}
