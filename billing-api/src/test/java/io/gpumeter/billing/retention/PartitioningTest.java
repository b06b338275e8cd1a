package io.gpumeter.billing.retention;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.zaxxer.hikari.HikariDataSource;
import io.gpumeter.billing.MaintenanceReport;
import io.gpumeter.billing.RetentionConfig;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.ledger.JdbcLedgerStore;
import io.gpumeter.metering.UsageRecord;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.sql.Timestamp;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.YearMonth;
import java.time.ZoneOffset;
import java.time.temporal.ChronoUnit;
import java.util.List;
import javax.sql.DataSource;
import org.flywaydb.core.Flyway;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Monthly partitions of usage_records, the request-id claim table, V3's conversion of existing
 * data, and retention. One server for the class; tests that move the clock far use a database of
 * their own in it (CREATE DATABASE + migrations), since maintenance drops what is old for them.
 */
class PartitioningTest {
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

  /** A new database in the same server, migrated to {@code target} (null: latest). */
  static HikariDataSource database(String name, String target) throws Exception {
    try (Connection c = db.maintenanceDataSource().getConnection();
        Statement s = c.createStatement()) {
      s.execute("CREATE DATABASE " + name);
    }
    HikariDataSource ds = new HikariDataSource();
    ds.setJdbcUrl(db.jdbcUrl().replace("/postgres", "/" + name));
    ds.setUsername("postgres");
    ds.setPassword(TestSupport.ownerPassword(tmp.resolve("pg")));
    ds.setMaximumPoolSize(2);
    var flyway = Flyway.configure().dataSource(ds).locations("classpath:db/migration");
    if (target != null) {
      flyway.target(target);
    }
    flyway.load().migrate();
    return ds;
  }

  static UsageRecord record(String id, long key, Instant finishedAt) {
    return TestSupport.record(id, key, 5, "toy", finishedAt, 600, 400, 5, 2);
  }

  static String partitionOf(DataSource ds, String requestId) throws Exception {
    try (Connection c = ds.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT tableoid::regclass::text FROM usage_records WHERE request_id = ?")) {
      ps.setString(1, requestId);
      try (ResultSet rs = ps.executeQuery()) {
        return rs.next() ? rs.getString(1) : null;
      }
    }
  }

  static long scalar(DataSource ds, String sql, Object... args) throws Exception {
    try (Connection c = ds.getConnection();
        PreparedStatement ps = c.prepareStatement(sql)) {
      for (int i = 0; i < args.length; i++) {
        ps.setObject(i + 1, args[i]);
      }
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }

  /**
   * The monthly partition a row finished at {@code t} belongs in, spelled out here rather than
   * asked of {@link MaintenanceTask#partitionName}: {@code usage_records_pYYYY_MM}, UTC month.
   */
  static String monthlyPartition(Instant t) {
    java.time.ZonedDateTime utc = t.atZone(ZoneOffset.UTC);
    return String.format("usage_records_p%04d_%02d", utc.getYear(), utc.getMonthValue());
  }

  @Test
  void partitionsAreNamedByUtcMonth() {
    assertThat(MaintenanceTask.partitionName(YearMonth.of(2026, 3)))
        .isEqualTo("usage_records_p2026_03");
    assertThat(MaintenanceTask.partitionName(YearMonth.of(2099, 12)))
        .isEqualTo("usage_records_p2099_12");
    assertThat(monthlyPartition(Instant.parse("2026-03-31T23:59:59Z")))
        .isEqualTo("usage_records_p2026_03");
    assertThat(monthlyPartition(Instant.parse("2026-04-01T00:00:00Z")))
        .isEqualTo("usage_records_p2026_04");
  }

  static boolean tableExists(DataSource ds, String name) throws Exception {
    return scalar(ds, "SELECT count(*) FROM pg_class WHERE relname = ?", name) == 1;
  }

  static Clock at(Instant t) {
    return Clock.fixed(t, ZoneOffset.UTC);
  }

  @Test
  void retentionUnderNinetyDaysIsRefusedWithAClearError() {
    assertThatThrownBy(() -> RetentionConfig.ofDays(89))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("at least 90 days")
        .hasMessageContaining("89 days");
    assertThat(RetentionConfig.ofDays(90).retention()).isEqualTo(Duration.ofDays(90));
    assertThat(RetentionConfig.defaults().retention()).isEqualTo(Duration.ofDays(90));
  }

  @Test
  void theSameRequestIdInTwoMonthsIsStoredAndRolledUpOnce() throws Exception {
    JdbcLedgerStore store = new JdbcLedgerStore(db.ledgerDataSource());
    Instant now = Instant.now().truncatedTo(ChronoUnit.SECONDS);
    long key = 9301;
    assertThat(store.write(List.of(record("twice", key, now)))).isEqualTo(1);
    // the same id with another finished_at, in another partition (next month)
    assertThat(store.write(List.of(record("twice", key, now.plus(35, ChronoUnit.DAYS))))).isZero();
    assertThat(
            scalar(
                db.dataSource(),
                "SELECT count(*) FROM usage_records WHERE request_id = ?",
                "twice"))
        .isEqualTo(1);
    assertThat(
            scalar(
                db.dataSource(),
                "SELECT sum(requests) FROM usage_hourly WHERE api_key_id = ?",
                key))
        .isEqualTo(1);
    assertThat(partitionOf(db.dataSource(), "twice")).isEqualTo(monthlyPartition(now));
    // both insert methods agree
    JdbcLedgerStore unnest =
        new JdbcLedgerStore(db.ledgerDataSource(), JdbcLedgerStore.Method.UNNEST);
    assertThat(unnest.write(List.of(record("twice", key, now.minus(40, ChronoUnit.DAYS)))))
        .isZero();
    assertThat(unnest.write(List.of(record("u-1", key, now), record("u-1", key, now))))
        .isEqualTo(1);
  }

  @Test
  void theV3MigrationKeepsExistingRowsAndTheirIdempotency() throws Exception {
    Instant now = Instant.now().truncatedTo(ChronoUnit.SECONDS);
    Instant old = now.minus(200, ChronoUnit.DAYS);
    try (HikariDataSource v2 = database("v3_from_v2", "2")) {
      try (Connection c = v2.getConnection();
          PreparedStatement ps =
              c.prepareStatement(
                  "INSERT INTO usage_records (request_id, api_key_id, account_id, model, device,"
                      + " device_name, device_uuid, timer_kind, driver_version, cuda_version,"
                      + " weight_policy, device_ns, prefill_ns, decode_ns, prompt_tokens,"
                      + " completion_tokens, queue_ns, steps, status, started_at, finished_at)"
                      + " VALUES (?, 1, 2, 'toy', 'cpu', 'c', '', 'host', '', '', 'tokens', 10,"
                      + " 6, 4, 1, 1, 0, 1, 'ok', ?, ?)")) {
        for (int i = 0; i < 3; i++) {
          Instant t = (i == 0 ? old : now).plusSeconds(i);
          ps.setString(1, "v2-" + i);
          ps.setTimestamp(2, Timestamp.from(t));
          ps.setTimestamp(3, Timestamp.from(t));
          ps.executeUpdate();
        }
      }
      Flyway.configure().dataSource(v2).locations("classpath:db/migration").load().migrate();

      assertThat(scalar(v2, "SELECT count(*) FROM usage_records")).isEqualTo(3);
      assertThat(scalar(v2, "SELECT count(*) FROM usage_request_ids")).isEqualTo(3);
      assertThat(partitionOf(v2, "v2-0")).isEqualTo(monthlyPartition(old));
      assertThat(partitionOf(v2, "v2-1")).isEqualTo(monthlyPartition(now));
      assertThat(
              scalar(
                  v2,
                  "SELECT count(*) FROM pg_partitioned_table WHERE partrelid ="
                      + " 'usage_records'::regclass"))
          .isEqualTo(1);
      // the old ids are still claimed: republishing them stores nothing
      JdbcLedgerStore store = new JdbcLedgerStore(v2);
      assertThat(
              store.write(
                  List.of(record("v2-0", 1, old.plus(3, ChronoUnit.DAYS)), record("v2-1", 1, now))))
          .isZero();
      assertThat(store.write(List.of(record("v3-new", 1, now)))).isEqualTo(1);
    }
  }

  @Test
  void anOldMonthIsDroppedWholeWhileItsRollupsStay() throws Exception {
    try (HikariDataSource ds = database("retention", null)) {
      Instant now = Instant.now();
      Instant then = now.minus(150, ChronoUnit.DAYS);
      String oldPartition = monthlyPartition(then);
      MaintenanceReport past = new MaintenanceTask(ds, RetentionConfig.defaults(), at(then)).run();
      assertThat(past.created()).contains(oldPartition);

      long key = 9302;
      JdbcLedgerStore store = new JdbcLedgerStore(ds);
      store.write(List.of(record("old-1", key, then), record("old-2", key, then.plusSeconds(60))));
      store.write(List.of(record("new-1", key, now)));
      assertThat(partitionOf(ds, "old-1")).isEqualTo(oldPartition);

      MaintenanceReport today = new MaintenanceTask(ds, RetentionConfig.defaults(), at(now)).run();
      assertThat(today.dropped()).contains(oldPartition);
      assertThat(tableExists(ds, oldPartition)).isFalse();
      assertThat(scalar(ds, "SELECT count(*) FROM usage_records WHERE api_key_id = ?", key))
          .isEqualTo(1);
      assertThat(partitionOf(ds, "new-1")).isNotNull();
      // the claims went with the rows, the rollups stay for good
      assertThat(scalar(ds, "SELECT count(*) FROM usage_request_ids WHERE request_id LIKE 'old-%'"))
          .isZero();
      assertThat(today.prunedClaims()).isEqualTo(2);
      assertThat(
              scalar(
                  ds,
                  "SELECT sum(requests) FROM usage_hourly WHERE api_key_id = ? AND hour < ?",
                  key,
                  Timestamp.from(now.minus(90, ChronoUnit.DAYS))))
          .isEqualTo(2);
      assertThat(scalar(ds, "SELECT sum(requests) FROM usage_hourly WHERE api_key_id = ?", key))
          .isEqualTo(3);
      // idempotent: a second run changes nothing
      MaintenanceReport again = new MaintenanceTask(ds, RetentionConfig.defaults(), at(now)).run();
      assertThat(again.created()).isEmpty();
      assertThat(again.dropped()).isEmpty();
    }
  }

  @Test
  void farFutureAndFarPastRecordsLandInTheDefaultPartitionAndMoveWhenTheirMonthIsCreated()
      throws Exception {
    try (HikariDataSource ds = database("far", null)) {
      long key = 9303;
      Instant future = Instant.parse("2099-05-17T12:00:00Z");
      Instant past = Instant.parse("1999-05-17T12:00:00Z");
      JdbcLedgerStore store = new JdbcLedgerStore(ds);
      assertThat(store.write(List.of(record("future", key, future), record("past", key, past))))
          .isEqualTo(2);
      assertThat(partitionOf(ds, "future")).isEqualTo("usage_records_default");
      assertThat(partitionOf(ds, "past")).isEqualTo("usage_records_default");
      assertThat(scalar(ds, "SELECT sum(requests) FROM usage_hourly WHERE api_key_id = ?", key))
          .isEqualTo(2);

      // Time passes: the month of the future record gets its partition and the record moves in;
      // the past record is older than the retention and is deleted; both stay in the rollups.
      MaintenanceReport r =
          new MaintenanceTask(
                  ds, RetentionConfig.defaults(), at(Instant.parse("2099-03-10T00:00:00Z")))
              .run();
      assertThat(r.created()).contains("usage_records_p2099_05");
      assertThat(r.movedFromDefault()).isEqualTo(1);
      assertThat(r.deletedFromDefault()).isEqualTo(1);
      assertThat(partitionOf(ds, "future")).isEqualTo("usage_records_p2099_05");
      assertThat(partitionOf(ds, "past")).isNull();
      assertThat(scalar(ds, "SELECT sum(requests) FROM usage_hourly WHERE api_key_id = ?", key))
          .isEqualTo(2);
      // the moved record is still claimed
      assertThat(store.write(List.of(record("future", key, future)))).isZero();
    }
  }
}
