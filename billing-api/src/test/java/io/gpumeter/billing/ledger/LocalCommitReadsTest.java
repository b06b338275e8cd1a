package io.gpumeter.billing.ledger;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.BillingConfig;
import io.gpumeter.billing.CommitPoint;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.ShippingLagException;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.UsageReport;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.UsageRecord;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.awaitility.Awaitility;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Reads and close with {@code ledger.commit_point=local} while shipping to PostgreSQL is really
 * stalled: a transaction of the test holds {@code LOCK TABLE usage_request_ids IN EXCLUSIVE MODE},
 * so the shipper's insert waits in PostgreSQL while reads (which only select) go on.
 */
class LocalCommitReadsTest {
  @TempDir static Path tmp;
  static Database db;

  @BeforeAll
  static void start() {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
  }

  @AfterAll
  static void stop() {
    db.close();
  }

  static Billing billing(String outbox) {
    return Billing.open(
        db,
        BillingConfig.defaults()
            .withLedger(
                LedgerConfig.custom()
                    .outboxDirectory(tmp.resolve(outbox))
                    .commitPoint(CommitPoint.LOCAL)
                    .retryBackoff(Duration.ofMillis(20))
                    .build())
            .withRetention(null));
  }

  /** A transaction that blocks every insert into usage_request_ids (the shipper's first step). */
  static Connection stallShipping() throws Exception {
    Properties p = new Properties();
    p.setProperty("user", "postgres");
    p.setProperty("password", TestSupport.ownerPassword(tmp.resolve("pg")));
    Connection c = DriverManager.getConnection(db.jdbcUrl(), p);
    c.setAutoCommit(false);
    try (Statement s = c.createStatement()) {
      s.execute("LOCK TABLE usage_request_ids IN EXCLUSIVE MODE");
    }
    return c;
  }

  static boolean runsIn(Thread t, String method) {
    return Arrays.stream(t.getStackTrace())
        .anyMatch(
            f ->
                f.getClassName().equals(LocalCommitLedgerStore.class.getName())
                    && f.getMethodName().equals(method));
  }

  static long stored(String requestId) throws Exception {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT count(*) FROM usage_records WHERE request_id = ?")) {
      ps.setString(1, requestId);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }

  @Test
  void aChargeAcknowledgedBeforeAUsageReadIsInItOrTheReadIsRefused() throws Exception {
    long key = 9701;
    Instant at = Instant.now().truncatedTo(ChronoUnit.SECONDS);
    Instant from = at.truncatedTo(ChronoUnit.HOURS);
    Instant to = from.plus(1, ChronoUnit.HOURS);
    UsageRecord r = TestSupport.record("ryw-1", key, at);
    try (Billing billing = billing("outbox-ryw")) {
      Connection lock = stallShipping();
      try {
        billing.ledger().publish(r).get(30, TimeUnit.SECONDS); // acknowledged: synced in the log
        assertThat(stored("ryw-1")).as("not shipped while the table is locked").isZero();

        // stalled past the read's deadline: refused, never a short answer
        long t0 = System.nanoTime();
        assertThatThrownBy(() -> billing.usage().usage(key, from, to))
            .isInstanceOf(ShippingLagException.class)
            .hasMessageContaining("not shipped");
        assertThat(System.nanoTime() - t0)
            .as("the read waited its deadline first")
            .isGreaterThanOrEqualTo(Billing.READ_SHIP_WAIT.toNanos());

        // stalled while a read waits: the read answers once shipping passes its start
        AtomicReference<Object> result = new AtomicReference<>();
        Thread reader =
            new Thread(
                () -> {
                  try {
                    result.set(billing.usage().usage(key, from, to));
                  } catch (RuntimeException e) {
                    result.set(e);
                  }
                },
                "usage-reader");
        reader.start();
        Awaitility.await("the read to wait for shipping")
            .atMost(Duration.ofSeconds(30))
            .pollInterval(Duration.ofMillis(5))
            .until(() -> runsIn(reader, "awaitShippedThrough") || !reader.isAlive());
        lock.rollback(); // PostgreSQL takes inserts again
        reader.join(60_000);
        assertThat(result.get()).isInstanceOf(UsageReport.class);
        UsageReport report = (UsageReport) result.get();
        assertThat(report.totals().requests()).isEqualTo(1);
        assertThat(report.totals().deviceNs()).isEqualTo(r.deviceNs());
      } finally {
        lock.close();
      }
      assertThat(stored("ryw-1")).isEqualTo(1);
    }
  }

  @Test
  void aGracefulCloseWaitsForAStalledShipment() throws Exception {
    long key = 9702;
    UsageRecord r = TestSupport.record("close-1", key, Instant.now());
    Billing billing = billing("outbox-close");
    Connection lock = stallShipping();
    Thread closer;
    try {
      billing.ledger().publish(r).get(30, TimeUnit.SECONDS);
      assertThat(stored("close-1")).isZero();
      closer = new Thread(billing::close, "closer");
      closer.start();
      Awaitility.await("the close to wait for shipping")
          .atMost(Duration.ofSeconds(30))
          .pollInterval(Duration.ofMillis(5))
          .until(() -> runsIn(closer, "awaitShipped") || !closer.isAlive());
      assertThat(closer.isAlive()).as("close still waiting for the stalled shipment").isTrue();
      lock.rollback();
    } finally {
      lock.close();
    }
    closer.join(60_000);
    assertThat(closer.isAlive()).isFalse();
    assertThat(stored("close-1"))
        .as("shipped during the close, not at the next start")
        .isEqualTo(1);
  }
}
