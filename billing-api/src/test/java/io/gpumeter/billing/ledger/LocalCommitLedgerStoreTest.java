package io.gpumeter.billing.ledger;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.gpumeter.billing.MeasuredDelta;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.UsageRecord;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The local commit log as a ledger store, onto a real embedded PostgreSQL: a write returns once the
 * log is synced, shipping follows, and what an earlier process left unshipped is shipped at the
 * next open exactly once, measured time included, even when it had been shipped already.
 */
class LocalCommitLedgerStoreTest {
  @TempDir static Path tmp;
  static Database db;
  static JdbcLedgerStore jdbc;

  @BeforeAll
  static void start() {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
    jdbc = new JdbcLedgerStore(db.ledgerDataSource());
  }

  @AfterAll
  static void stop() {
    db.close();
  }

  static final Instant AT = Instant.now().truncatedTo(ChronoUnit.HOURS).minus(5, ChronoUnit.HOURS);
  static final long MINUTE = Math.floorDiv(AT.getEpochSecond(), 60) + 7;

  static UsageRecord record(String model, int i) {
    return TestSupport.record(
        model + "-" + i, 9601, 1, model, AT.plusSeconds(420 + i), 600, 400, 5, 1);
  }

  static MeasuredBatch measured(String model, List<UsageRecord> records) {
    return MeasuredBatch.of(
        UUID.randomUUID(),
        UUID.randomUUID(),
        List.of(new MeasuredDelta(MINUTE, model, "cpu", 2_500, 2_000, 500, 3)),
        records);
  }

  @Test
  void aWriteIsDurableInTheLogAndShippedAfterwards() throws Exception {
    String model = "local-ship";
    List<UsageRecord> rs = List.of(record(model, 1), record(model, 2));
    Path dir = tmp.resolve("log-ship");
    try (LocalCommitLedgerStore store =
        LocalCommitLedgerStore.open(CommitLog.open(dir, 1 << 20), jdbc, Duration.ofMillis(10))) {
      assertThat(store.write(rs, measured(model, rs))).isEqualTo(2);
      assertThat(store.awaitShipped(Duration.ofSeconds(30))).isTrue();
      assertThat(store.unshippedRecords()).isZero();
      assertThat(store.shippedBatches()).isEqualTo(1);
    }
    assertThat(rows(model)).isEqualTo(2);
    assertThat(measuredNs(model)).containsExactly(2_500L, 2_000L, 500L, 3L);
  }

  @Test
  void whatWasNotShippedIsShippedOnceAtTheNextOpenAndAgainStoresNothingTwice() throws Exception {
    String model = "local-replay";
    Path dir = tmp.resolve("log-replay");
    AtomicBoolean down = new AtomicBoolean(true);
    LedgerStore flaky =
        new LedgerStore() {
          @Override
          public int write(List<UsageRecord> records) throws LedgerWriteException {
            return write(records, null);
          }

          @Override
          public int write(List<UsageRecord> records, MeasuredBatch m) throws LedgerWriteException {
            if (down.get()) {
              throw new LedgerWriteException("database down (test)", null, false);
            }
            return jdbc.write(records, m);
          }
        };
    List<UsageRecord> first = List.of(record(model, 1), record(model, 2));
    try (LocalCommitLedgerStore store =
        LocalCommitLedgerStore.open(CommitLog.open(dir, 1 << 20), flaky, Duration.ofMillis(5))) {
      // answered (durable in the log) while the database refuses every write
      assertThat(store.write(first, measured(model, first))).isEqualTo(2);
      assertThat(store.write(List.of(record(model, 3)), null)).isEqualTo(1);
      assertThat(store.unshippedRecords()).isEqualTo(3);
      assertThat(store.awaitShipped(Duration.ofMillis(200))).isFalse();
    } // closed without shipping: what a killed process leaves behind
    assertThat(rows(model)).isZero();

    // a copy of the log as it is now: later, a process that died after shipping but before the
    // segments were dropped
    Path copy = tmp.resolve("log-replay-copy");
    Files.createDirectories(copy);
    try (Stream<Path> files = Files.list(dir)) {
      for (Path p : files.toList()) {
        Files.copy(p, copy.resolve(p.getFileName()));
      }
    }

    down.set(false);
    try (LocalCommitLedgerStore store =
        LocalCommitLedgerStore.open(CommitLog.open(dir, 1 << 20), flaky, Duration.ofMillis(5))) {
      assertThat(rows(model)).isEqualTo(3); // shipped before open returned
      assertThat(store.unshippedRecords()).isZero();
    }
    try (Stream<Path> files = Files.list(dir)) {
      assertThat(files.toList()).as("shipped segments are dropped").isEmpty();
    }
    assertThat(measuredNs(model)).containsExactly(2_500L, 2_000L, 500L, 3L);

    try (LocalCommitLedgerStore store =
        LocalCommitLedgerStore.open(CommitLog.open(copy, 1 << 20), jdbc, Duration.ofMillis(5))) {
      assertThat(store.unshippedRecords()).isZero();
    }
    assertThat(rows(model)).isEqualTo(3);
    assertThat(measuredNs(model)).containsExactly(2_500L, 2_000L, 500L, 3L);
  }

  @Test
  void aFullLogRefusesNewChargesUntilShippingFreesSegments() throws Exception {
    String model = "local-full";
    AtomicBoolean down = new AtomicBoolean(true);
    LedgerStore flaky =
        new LedgerStore() {
          @Override
          public int write(List<UsageRecord> records) throws LedgerWriteException {
            return write(records, null);
          }

          @Override
          public int write(List<UsageRecord> records, MeasuredBatch m) throws LedgerWriteException {
            if (down.get()) {
              throw new LedgerWriteException("database down (test)", null, false);
            }
            return jdbc.write(records, m);
          }
        };
    long max = 3 * 4096L;
    try (LocalCommitLedgerStore store =
        LocalCommitLedgerStore.open(
            CommitLog.open(tmp.resolve("log-full"), 4096), flaky, Duration.ofMillis(5), max)) {
      int i = 0;
      while (store.isAccepting()) {
        assertThat(i).as("the bound is reached within a few segments").isLessThan(1000);
        store.write(List.of(record(model, i++)), null);
        store.acknowledged(); // as LedgerWriter does once the batch's futures are complete
      }
      assertThat(store.bytesOnDisk()).isGreaterThan(max);
      // the log can fill before the shipper's first attempt has failed: wait for that attempt
      await()
          .atMost(Duration.ofSeconds(10))
          .untilAsserted(
              () ->
                  assertThat(store.refusalReason())
                      .contains("the local commit log is full")
                      .contains("records not shipped")
                      .contains("database down (test)"));
      down.set(false);
      assertThat(store.awaitShipped(Duration.ofSeconds(30))).isTrue();
      // one more batch: the shipper (one thread) finished dropping the shipped segments after the
      // earlier batches before it ships this one
      store.write(List.of(record(model, i++)), null);
      store.acknowledged();
      assertThat(store.awaitShipped(Duration.ofSeconds(30))).isTrue();
      assertThat(store.bytesOnDisk()).isLessThanOrEqualTo(max);
      assertThat(store.isAccepting()).isTrue();
      assertThat(store.refusalReason()).isNull();
      assertThat(rows(model)).isEqualTo(i);
    }
  }

  static long rows(String model) throws SQLException {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT count(*) FROM usage_records WHERE model = ?")) {
      ps.setString(1, model);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }

  static List<Long> measuredNs(String model) throws SQLException {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT measured_ns, charged_ns, system_ns, steps FROM device_time_minutely"
                    + " WHERE model = ? AND minute = ?")) {
      ps.setString(1, model);
      ps.setTimestamp(2, Timestamp.from(Instant.ofEpochSecond(MINUTE * 60)));
      try (ResultSet rs = ps.executeQuery()) {
        assertThat(rs.next()).isTrue();
        return List.of(rs.getLong(1), rs.getLong(2), rs.getLong(3), rs.getLong(4));
      }
    }
  }
}
