package io.gpumeter.server.faults;

import static io.gpumeter.server.faults.FaultSupport.await;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.db.Database;
import io.gpumeter.server.GpumeterServer;
import io.gpumeter.server.TestServers;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.io.OutputStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import javax.sql.DataSource;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * DESIGN.md invariant 15: a client never pays for an answer it did not get. A finished generation
 * whose answer is withheld (503: its charge could not be made durable) or never delivered (the
 * client reset the connection before the answer) has its charge voided with the reason; usage
 * totals exclude it, the record stays for audit, and reconciliation still has drift 0 and reports
 * the voided time by reason.
 */
class ChargeVoidTest {
  private static final String TOKEN = "admin-token-for-tests-0123456789";

  @TempDir Path tmp;

  /**
   * Case (a): PostgreSQL down and the outbox full, so a generated completion's charge cannot be
   * made durable and the client gets 503. The void (retried while PostgreSQL is down) is stored
   * with reason {@code not_durable}, and the request is in nobody's usage totals.
   */
  @Test
  @Timeout(180)
  void aCompletionWithheldBecauseItsChargeWasNotDurableIsVoided() throws Exception {
    int pgPort = FaultSupport.freePort();
    Database pg = FaultSupport.startPostgres(tmp.resolve("pg"), pgPort);
    GpumeterServer server = null;
    try {
      // the outbox's contract: pinned to postgres (with the local commit point the
      // log keeps charges while PostgreSQL is down: LocalCommitLogFullTest)
      server =
          GpumeterServer.start(
              TestServers.config("void-not-durable")
                  .set("db.url", FaultSupport.jdbcUrl(tmp.resolve("pg"), pgPort))
                  .set("db.user", "postgres")
                  .set("outbox.max_bytes", "4k")
                  .set("ledger.commit_point", "postgres")
                  .build(),
              StepListener.NONE);
      GpumeterServer s = server;
      CreatedApiKey key = server.billing().apiKeys().create("void-not-durable");
      Client client = new Client(server.port());
      List<String> answered = new ArrayList<>();
      // Caches the key: while PostgreSQL is down, only cached keys authenticate.
      Reply warm =
          client.post("/v1/completions", key.plaintext(), FaultSupport.completion("Hi ", 2));
      assertThat(warm.status()).as(warm.toString()).isEqualTo(200);
      answered.add(warm.header("x-request-id"));
      FaultSupport.killPostgres(pg);
      Reply withheld = null;
      for (int i = 0; i < 200 && withheld == null; i++) {
        Reply r =
            client.post("/v1/completions", key.plaintext(), FaultSupport.completion("Hi " + i, 3));
        if (r.status() == 200) {
          answered.add(r.header("x-request-id"));
        } else {
          assertThat(r.status()).as(r.toString()).isEqualTo(503);
          withheld = r;
        }
      }
      assertThat(withheld).as("a completion refused once the outbox is full").isNotNull();
      assertThat(withheld.json().get("error").get("message").asText())
          .as("refused after it was generated, not at admission: %s", withheld)
          .contains("was generated but its charge could not be recorded durably");
      String id = withheld.header("x-request-id");
      assertThat(id).isNotNull();

      assertThat(pg.ensureEmbeddedRunning()).isTrue();
      await(
          () -> s.billing().health().outboxBytes() == 0 && s.billing().canAcceptWork(),
          Duration.ofSeconds(60),
          "the outbox to be replayed: " + s.billing().health());
      await(
          () -> s.billing().usage().voidReason(id).isPresent(),
          Duration.ofSeconds(30),
          "the void of " + id + " to be stored once PostgreSQL is back");
      assertThat(s.billing().usage().voidReason(id)).contains("not_durable");
      Map<String, Integer> rows = FaultSupport.rowsOfKey(pg.dataSource(), key.keyId());
      assertThat(rows.keySet()).containsAll(answered);
      assertThat(rows.values()).allMatch(n -> n == 1);
      JsonNode totals = client.get("/v1/usage", key.plaintext()).json().get("totals");
      // The voided request is not in the totals whether or not its record landed.
      assertThat(totals.get("requests").asLong()).isEqualTo(answered.size());
      long answeredNs = 0;
      for (String a : answered) {
        answeredNs += s.billing().usage().find(a).orElseThrow().record().deviceNs();
      }
      assertThat(totals.get("device_time_ns").asLong()).isEqualTo(answeredNs);
    } finally {
      if (server != null) {
        server.close();
      }
      pg.close();
    }
  }

  /**
   * Case (b): the client resets the connection after its generation finished, while the charge is
   * still being committed (held by a lock on the rollup). The charge is stored, then voided with
   * reason {@code client_gone}: usage totals exclude it, the record stays, and {@code
   * /admin/reconcile} has drift 0 and reports the voided time.
   */
  @Test
  @Timeout(180)
  void aClientThatResetsAfterItsGenerationFinishedDoesNotPayForIt() throws Exception {
    Instant from = Instant.now();
    try (GpumeterServer server =
            GpumeterServer.start(
                TestServers.config("void-reset").set("admin.token", TOKEN).build(),
                StepListener.NONE);
        Database db = Database.start(server.config().toolDatabaseConfig())) {
      CreatedApiKey key = server.billing().apiKeys().create("void-reset");
      Client client = new Client(server.port());
      Reply paid =
          client.post("/v1/completions", key.plaintext(), FaultSupport.completion("Hi ", 3));
      assertThat(paid.status()).as(paid.toString()).isEqualTo(200);
      long paidNs = paid.json().get("usage").get("device_time_ns").asLong();
      long completedBefore = server.schedulers().get(0).stats().completed();

      DataSource owner = db.maintenanceDataSource();
      String voidedId;
      try (Connection lock = owner.getConnection()) {
        lock.setAutoCommit(false);
        try (Statement st = lock.createStatement()) {
          // The ledger's commit waits on this lock, so the charge is not durable yet and the
          // response not sent while the client leaves.
          st.execute("LOCK TABLE usage_hourly IN EXCLUSIVE MODE");
        }
        try (Socket sock = new Socket("127.0.0.1", server.port())) {
          OutputStream out = sock.getOutputStream();
          byte[] b = FaultSupport.completion("Hello ", 4).getBytes(StandardCharsets.UTF_8);
          out.write(
              ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + key.plaintext()
                      + "\r\nContent-Type: application/json\r\nContent-Length: "
                      + b.length
                      + "\r\n\r\n")
                  .getBytes(StandardCharsets.US_ASCII));
          out.write(b);
          out.flush();
          await(
              () -> server.schedulers().get(0).stats().completed() > completedBefore,
              Duration.ofSeconds(30),
              "the generation to finish");
          sock.setSoLinger(true, 0); // close() now sends a reset
        }
        List<String> voids =
            awaitValue(
                () -> voidsList(db.dataSource()),
                v -> !v.isEmpty(),
                "the void of the reset request, stored while its charge waits");
        assertThat(voids).hasSize(1);
        voidedId = voids.get(0);
        assertThat(voidedId).endsWith(" client_gone");
        voidedId = voidedId.substring(0, voidedId.indexOf(' '));
        lock.rollback();
      }
      String id = voidedId;
      await(
          () -> server.billing().usage().countForRequest(id) == 1 && applied(db.dataSource(), id),
          Duration.ofSeconds(60),
          "the charge of " + id + " to be stored and its void applied");
      long voidedNs = server.billing().usage().find(id).orElseThrow().record().deviceNs();
      assertThat(voidedNs).isPositive();

      JsonNode totals = client.get("/v1/usage", key.plaintext()).json().get("totals");
      assertThat(totals.get("requests").asLong()).as(totals.toString()).isEqualTo(1);
      assertThat(totals.get("device_time_ns").asLong()).as(totals.toString()).isEqualTo(paidNs);

      Instant to = Instant.now();
      Reply r = client.get("/admin/reconcile?from=" + from + "&to=" + to, TOKEN);
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
      JsonNode report = r.json();
      assertThat(report.get("total_drift_ns").asLong()).as(r.toString()).isZero();
      assertThat(report.get("balanced").asBoolean()).as(r.toString()).isTrue();
      JsonNode line = FaultSupport.lineOf(report, FaultSupport.MODEL);
      assertThat(line.get("records").asLong()).isEqualTo(2);
      assertThat(line.get("voided_ns").asLong()).isEqualTo(voidedNs);
      assertThat(report.get("voided_ns_by_reason").get("client_gone").asLong()).isEqualTo(voidedNs);
    }
  }

  private static <T> T awaitValue(
      java.util.concurrent.Callable<T> value, java.util.function.Predicate<T> ok, String what) {
    return org.awaitility.Awaitility.await(what)
        .atMost(Duration.ofSeconds(30))
        .pollInterval(Duration.ofMillis(50))
        .until(value, ok::test);
  }

  /** Every void as "request_id reason". */
  private static List<String> voidsList(DataSource ds) throws Exception {
    List<String> out = new ArrayList<>();
    try (Connection c = ds.getConnection();
        PreparedStatement ps = c.prepareStatement("SELECT request_id, reason FROM charge_voids");
        ResultSet rs = ps.executeQuery()) {
      while (rs.next()) {
        out.add(rs.getString(1) + " " + rs.getString(2));
      }
    }
    return out;
  }

  private static boolean applied(DataSource ds, String id) {
    try (Connection c = ds.getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT applied_ns FROM charge_voids WHERE request_id = ?")) {
      ps.setString(1, id);
      try (ResultSet rs = ps.executeQuery()) {
        return rs.next() && rs.getObject(1) != null;
      }
    } catch (Exception e) {
      return false;
    }
  }
}
