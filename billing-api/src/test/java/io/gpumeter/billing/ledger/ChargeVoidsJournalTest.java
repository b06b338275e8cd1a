package io.gpumeter.billing.ledger;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.VoidReason;
import io.gpumeter.billing.db.Database;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.concurrent.TimeUnit;
import javax.sql.DataSource;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.postgresql.ds.PGSimpleDataSource;

/**
 * DESIGN.md invariant 15: a void that is pending while PostgreSQL is down survives the death of its
 * process, through the fsynced journal in the outbox directory that the next process replays.
 */
class ChargeVoidsJournalTest {
  @TempDir Path tmp;

  /** A database that refuses connections: nothing listens on the port. */
  static DataSource down() throws Exception {
    int port;
    try (ServerSocket s = new ServerSocket(0)) {
      port = s.getLocalPort();
    }
    PGSimpleDataSource ds = new PGSimpleDataSource();
    ds.setServerNames(new String[] {"127.0.0.1"});
    ds.setPortNumbers(new int[] {port});
    ds.setDatabaseName("postgres");
    ds.setConnectTimeout(2);
    return ds;
  }

  @Test
  @Timeout(120)
  void aVoidPendingWhenItsProcessDiesIsStoredByTheNextOnTheSameOutbox() throws Exception {
    Path outbox = tmp.resolve("outbox");
    Path journal = outbox.resolve(ChargeVoids.JOURNAL_FILE);
    // The "dead" process: its database is down, and it is never closed (as after a SIGKILL).
    ChargeVoids dying = new ChargeVoids(down(), 60_000, outbox);
    dying.voidCharge("cmpl-lost-1", VoidReason.CLIENT_GONE);
    dying.voidCharge("cmpl-lost-2", VoidReason.NOT_DURABLE);
    await()
        .atMost(30, TimeUnit.SECONDS)
        .until(
            () ->
                Files.exists(journal)
                    && Files.readString(journal, StandardCharsets.UTF_8).contains("cmpl-lost-2"));
    assertThat(Files.readAllLines(journal, StandardCharsets.UTF_8))
        .containsExactly("cmpl-lost-1 client_gone", "cmpl-lost-2 not_durable");

    try (Database db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
        ChargeVoids next = new ChargeVoids(db.dataSource(), 100, outbox)) {
      await()
          .atMost(60, TimeUnit.SECONDS)
          .until(
              () ->
                  "client_gone".equals(reason(db.dataSource(), "cmpl-lost-1"))
                      && "not_durable".equals(reason(db.dataSource(), "cmpl-lost-2")));
      await().atMost(30, TimeUnit.SECONDS).until(() -> Files.size(journal) == 0);

      // A void stored at once leaves the journal empty again.
      next.voidCharge("cmpl-fine", VoidReason.WRITE_FAILED).get(60, TimeUnit.SECONDS);
      assertThat(reason(db.dataSource(), "cmpl-fine")).isEqualTo("write_failed");
      assertThat(Files.size(journal)).isZero();
    }
  }

  static String reason(DataSource ds, String requestId) throws Exception {
    try (Connection c = ds.getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT reason FROM charge_voids WHERE request_id = ?")) {
      ps.setString(1, requestId);
      try (ResultSet rs = ps.executeQuery()) {
        return rs.next() ? rs.getString(1) : null;
      }
    }
  }
}
