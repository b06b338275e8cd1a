package io.gpumeter.billing.accounting;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.pricing.Settlement;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * V25: the ledger's insert stores only the record, and {@code settle_charges()} prices and deducts
 * every record stored since its watermark exactly once (docs/DESIGN.md, "Money", "Settlement off
 * the write path"), on the real embedded PostgreSQL.
 */
class DeferredSettlementTest {
  @TempDir static Path tmp;
  static Database db;
  static Accounting money;
  static long account;

  @BeforeAll
  static void start() {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
    money = new Accounting(db.dataSource(), Clock.systemUTC());
    Instant longAgo = Instant.parse("2020-01-01T00:00:00Z");
    account = money.createAccount("settle", "USD", false).id();
    money.setPrice("*", "cpu", "USD", 1_000, longAgo, null); // 1 ms = 1 micro-unit
    money.grantCredit("settle", "topup", 1_000_000_000L, null, "plenty");
  }

  @AfterAll
  static void stop() {
    db.close();
  }

  /** Inserts {@code n} records of 1 ms each, ids {@code prefix-0..n-1}, in one statement. */
  static void insert(Connection c, String prefix, int n) throws SQLException {
    try (PreparedStatement ps =
        c.prepareStatement(
            "INSERT INTO usage_records (request_id, api_key_id, account_id, model, device,"
                + " device_name, device_uuid, timer_kind, driver_version, cuda_version,"
                + " weight_policy, device_ns, prefill_ns, decode_ns, prompt_tokens,"
                + " completion_tokens, queue_ns, steps, status, started_at, finished_at)"
                + " SELECT ? || '-' || g, 1, ?, 'm', 'cpu', 'cpu', '', 'test', '', '', 'test',"
                + " 1000000, 0, 1000000, 1, 1, 0, 1, 'ok', ?, ? FROM generate_series(0, ? - 1) g")) {
      Timestamp at = Timestamp.from(Instant.now().truncatedTo(ChronoUnit.MILLIS));
      ps.setString(1, prefix);
      ps.setLong(2, account);
      ps.setTimestamp(3, at);
      ps.setTimestamp(4, at);
      ps.setInt(5, n);
      assertThat(ps.executeUpdate()).isEqualTo(n);
    }
  }

  static long count(String sql, String prefix) throws SQLException {
    try (Connection c = db.maintenanceDataSource().getConnection();
        PreparedStatement ps = c.prepareStatement(sql)) {
      ps.setString(1, prefix + "-%");
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }

  static boolean anAdvisoryLockIsAwaited() throws SQLException {
    try (Connection c = db.maintenanceDataSource().getConnection();
        Statement st = c.createStatement();
        ResultSet rs =
            st.executeQuery(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")) {
      rs.next();
      return rs.getLong(1) > 0;
    }
  }

  static long priced(String prefix) throws SQLException {
    return count("SELECT count(*) FROM charge_prices WHERE request_id LIKE ?", prefix);
  }

  static long deducted(String prefix) throws SQLException {
    return count(
        "SELECT count(*) FROM charge_deductions WHERE kind = 'charge' AND request_id LIKE ?",
        prefix);
  }

  static long settle() throws SQLException {
    return Settlement.settle(db.dataSource());
  }

  @Test
  void theWritePathPricesNothingAndOneRunSettlesEachRecordOnce() throws Exception {
    settle();
    try (Connection c = db.dataSource().getConnection()) {
      insert(c, "once", 50);
    }
    assertThat(priced("once")).as("nothing priced in the insert").isZero();
    assertThat(deducted("once")).isZero();
    assertThat(settle()).isEqualTo(50);
    assertThat(priced("once")).isEqualTo(50);
    assertThat(deducted("once")).isEqualTo(50);
    assertThat(settle()).as("a second run finds nothing").isZero();
    assertThat(deducted("once")).isEqualTo(50);
    // each paid from the top-up: 1 micro-unit = 10^9 nano-micro-units
    assertThat(
            count(
                "SELECT sum(-amount_nmicros) / 1000000000 FROM balance_entries"
                    + " WHERE kind = 'deduction' AND request_id LIKE ?",
                "once"))
        .isEqualTo(50);
    assertThat(money.verifyBalances()).isEmpty();
  }

  @Test
  void aRunWaitsForAnUncommittedWriterAndThenSettlesItsRecords() throws Exception {
    settle();
    ExecutorService pool = Executors.newSingleThreadExecutor();
    try (Connection writer = db.dataSource().getConnection()) {
      writer.setAutoCommit(false);
      insert(writer, "open", 7); // holds the gate shared until it commits
      Future<Long> run = pool.submit(DeferredSettlementTest::settle);
      // the run waits for the gate (an advisory lock not granted), it does not skip the records
      await().atMost(Duration.ofSeconds(60)).until(DeferredSettlementTest::anAdvisoryLockIsAwaited);
      assertThat(run).isNotDone();
      writer.commit();
      assertThat(run.get(60, TimeUnit.SECONDS)).isEqualTo(7);
    } finally {
      pool.shutdownNow();
    }
    assertThat(deducted("open")).isEqualTo(7);
  }

  @Test
  void recordsOfConcurrentWritersAreEachSettledExactlyOnceWhileRunsGoOn() throws Exception {
    int writers = 4;
    int batches = 15;
    int perBatch = 20;
    ExecutorService pool = Executors.newFixedThreadPool(writers + 1);
    AtomicBoolean writing = new AtomicBoolean(true);
    try {
      List<Future<?>> ws = new ArrayList<>();
      for (int w = 0; w < writers; w++) {
        int id = w;
        ws.add(
            pool.submit(
                () -> {
                  try (Connection c = db.dataSource().getConnection()) {
                    for (int b = 0; b < batches; b++) {
                      insert(c, "conc-" + id + "-" + b, perBatch);
                    }
                  }
                  return null;
                }));
      }
      CompletableFuture<Long> runs =
          CompletableFuture.supplyAsync(
              () -> {
                long n = 0;
                try {
                  while (writing.get()) {
                    n += settle();
                  }
                } catch (SQLException e) {
                  throw new IllegalStateException(e);
                }
                return n;
              },
              pool);
      for (Future<?> f : ws) {
        f.get(120, TimeUnit.SECONDS);
      }
      writing.set(false);
      long during = runs.get(120, TimeUnit.SECONDS);
      long after = settle();
      assertThat(during + after).isEqualTo((long) writers * batches * perBatch);
    } finally {
      pool.shutdownNow();
    }
    assertThat(priced("conc")).isEqualTo((long) writers * batches * perBatch);
    assertThat(deducted("conc")).isEqualTo((long) writers * batches * perBatch);
    assertThat(money.verifyBalances()).isEmpty();
  }

  @Test
  void aVoidBeforeTheRunIsNeverDeductedAndOneAfterItIsReversed() throws Exception {
    settle();
    try (Connection c = db.dataSource().getConnection()) {
      insert(c, "void", 2);
      try (Statement st = c.createStatement()) {
        st.execute(
            "INSERT INTO charge_voids (request_id, reason) VALUES ('void-0', 'client_gone')");
      }
      assertThat(settle()).as("the voided record is not deducted").isEqualTo(1);
      try (Statement st = c.createStatement()) {
        st.execute(
            "INSERT INTO charge_voids (request_id, reason) VALUES ('void-1', 'client_gone')");
      }
    }
    assertThat(
            count(
                "SELECT count(*) FROM charge_deductions WHERE kind = 'charge' AND request_id LIKE ?",
                "void"))
        .isEqualTo(1);
    assertThat(
            count(
                "SELECT count(*) FROM charge_deductions WHERE kind = 'void' AND request_id LIKE ?",
                "void"))
        .as("the void after the run reversed its deduction")
        .isEqualTo(1);
    assertThat(
            count(
                "SELECT coalesce(sum(amount_nmicros), 0) FROM balance_entries"
                    + " WHERE request_id LIKE ?",
                "void"))
        .as("deduction and adjustment cancel")
        .isZero();
    assertThat(money.verifyBalances()).isEmpty();
  }
}
