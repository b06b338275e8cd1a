package io.gpumeter.server.faults;

import static io.gpumeter.server.faults.FaultSupport.await;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.ShippingLagException;
import io.gpumeter.billing.db.Database;
import io.gpumeter.server.GpumeterServer;
import io.gpumeter.server.TestServers;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link OutboxFullTest}'s contract with {@code ledger.commit_point=local}: PostgreSQL is down and
 * the commit log reaches {@code ledger.commit_log_max_bytes} (16k: segments of 4 KiB): new
 * completions get 503 {@code billing_unavailable} saying the log is full, {@code /readyz} is 503
 * with the reason, nothing goes to the outbox, and a reconciliation report is refused ({@link
 * ShippingLagException}) rather than count the unshipped charges as drift. When PostgreSQL returns
 * the log is shipped, every completion answered before is in the ledger once and the server takes
 * work again.
 */
class LocalCommitLogFullTest {
  @TempDir Path tmp;

  @Test
  @Timeout(120)
  void aFullCommitLogRefusesNewWorkAndLosesNothingAccepted() throws Exception {
    int pgPort = FaultSupport.freePort();
    Database pg = FaultSupport.startPostgres(tmp.resolve("pg"), pgPort);
    GpumeterServer server = null;
    try {
      server =
          GpumeterServer.start(
              TestServers.config("log-full")
                  .set("db.url", FaultSupport.jdbcUrl(tmp.resolve("pg"), pgPort))
                  .set("db.user", "postgres")
                  .set("ledger.commit_point", "local")
                  .set("ledger.commit_log_max_bytes", "16k")
                  .build(),
              StepListener.NONE);
      GpumeterServer s = server;
      CreatedApiKey key = server.billing().apiKeys().create("log-full");
      Client client = new Client(server.port());
      List<String> answered = new ArrayList<>();
      Reply warm =
          client.post("/v1/completions", key.plaintext(), FaultSupport.completion("Hi ", 2));
      assertThat(warm.status()).as(warm.toString()).isEqualTo(200);
      answered.add(warm.header("x-request-id"));

      FaultSupport.killPostgres(pg);
      int answeredWhileDown = 0;
      Reply refused = null;
      for (int i = 0; i < 400 && refused == null; i++) {
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
      assertThat(answeredWhileDown).as("answered while the log had room").isPositive();
      assertThat(refused).as("a completion refused once the log is full").isNotNull();
      Reply next =
          client.post("/v1/completions", key.plaintext(), FaultSupport.completion("Hi ", 3));
      assertThat(next.status()).as(next.toString()).isEqualTo(503);
      assertThat(next.header("Retry-After")).isNotNull();
      assertThat(next.json().get("error").get("message").asText())
          .contains("local commit log is full");

      Reply ready = client.get("/readyz", null);
      assertThat(ready.status()).as(ready.toString()).isEqualTo(503);
      assertThat(ready.json().get("reason").asText()).contains("local commit log is full");
      assertThat(s.billing().health().outboxedRecords()).as("nothing outboxed").isZero();
      // a reconciliation now would count what waits in the log as drift: it refuses, saying so
      Instant to = Instant.now().truncatedTo(ChronoUnit.MINUTES).plus(1, ChronoUnit.MINUTES);
      assertThatThrownBy(() -> s.billing().reconciliation().report(to.minusSeconds(3600), to))
          .isInstanceOf(ShippingLagException.class)
          .hasMessageContaining("charges in the local commit log were not shipped");
      System.out.printf(
          "commit log full: %d completions answered with PostgreSQL down, then %s%n",
          answeredWhileDown, refused);

      assertThat(pg.ensureEmbeddedRunning()).isTrue();
      await(
          () -> s.billing().unshippedRecords() == 0 && s.billing().canAcceptWork(),
          Duration.ofSeconds(60),
          "the commit log to be shipped: " + s.billing().health());
      Map<String, Integer> rows = FaultSupport.rowsOfKey(pg.dataSource(), key.keyId());
      assertThat(rows.values()).as("no request charged twice").allMatch(n -> n == 1);
      assertThat(rows.keySet()).containsAll(answered);

      Reply again =
          client.post("/v1/completions", key.plaintext(), FaultSupport.completion("Hi ", 3));
      assertThat(again.status()).as(again.toString()).isEqualTo(200);
    } finally {
      if (server != null) {
        server.close();
      }
      pg.close();
    }
  }
}
