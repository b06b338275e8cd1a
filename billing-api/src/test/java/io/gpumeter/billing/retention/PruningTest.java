package io.gpumeter.billing.retention;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.IdempotencyClaim.Outcome;
import io.gpumeter.billing.IdempotencyKeys;
import io.gpumeter.billing.MaintenanceReport;
import io.gpumeter.billing.RetentionConfig;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.idempotency.JdbcIdempotencyKeys;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Timestamp;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What the maintenance job prunes besides partitions: measured-batch claims past the safe horizon
 * (retention cutoff minus a day) and idempotency keys past their 24 hours.
 */
class PruningTest {
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

  static final Instant NOW = Instant.parse("2026-11-30T12:00:00Z");

  @Test
  void measuredBatchesArePrunedOnlyPastTheRetentionCutoffLessADay() throws Exception {
    RetentionConfig retention = RetentionConfig.defaults();
    Instant cutoff = NOW.minus(retention.retention());
    Instant horizon = cutoff.minus(MaintenanceTask.MEASURED_BATCH_MARGIN);
    List<UUID> old = new ArrayList<>();
    List<UUID> kept = new ArrayList<>();
    for (Instant at :
        List.of(
            horizon.minus(Duration.ofDays(30)),
            horizon.minusSeconds(1),
            horizon,
            cutoff,
            NOW.minus(Duration.ofDays(1)))) {
      UUID id = UUID.randomUUID();
      insertBatch(id, at);
      (at.isBefore(horizon) ? old : kept).add(id);
    }
    MaintenanceReport report =
        new MaintenanceTask(db.maintenanceDataSource(), retention, Clock.fixed(NOW, ZoneOffset.UTC))
            .run();
    assertThat(report.prunedMeasuredBatches()).isEqualTo(old.size());
    assertThat(batchIds()).containsExactlyInAnyOrderElementsOf(kept);
    MaintenanceReport again =
        new MaintenanceTask(db.maintenanceDataSource(), retention, Clock.fixed(NOW, ZoneOffset.UTC))
            .run();
    assertThat(again.prunedMeasuredBatches()).isZero();
  }

  @Test
  void idempotencyKeysArePrunedAfterTwentyFourHours() throws Exception {
    Duration lease = Duration.ofMinutes(5);
    IdempotencyKeys dayOld =
        new JdbcIdempotencyKeys(
            db.dataSource(), Clock.fixed(NOW.minus(IdempotencyKeys.RETENTION), ZoneOffset.UTC));
    IdempotencyKeys recent =
        new JdbcIdempotencyKeys(
            db.dataSource(),
            Clock.fixed(NOW.minus(IdempotencyKeys.RETENTION).plusSeconds(1), ZoneOffset.UTC));
    byte[] h = new byte[32];
    assertThat(dayOld.claim(9, "expired", h, "p-1", lease).outcome()).isEqualTo(Outcome.CLAIMED);
    assertThat(dayOld.complete(9, "expired", "p-1", 200, new byte[] {'{', '}'})).isTrue();
    assertThat(recent.claim(9, "fresh", h, "p-2", lease).outcome()).isEqualTo(Outcome.CLAIMED);

    MaintenanceReport report =
        new MaintenanceTask(
                db.maintenanceDataSource(),
                RetentionConfig.defaults(),
                Clock.fixed(NOW, ZoneOffset.UTC))
            .run();
    assertThat(report.prunedIdempotencyKeys()).isEqualTo(1);
    assertThat(idempotencyKeys()).containsExactly("fresh");
  }

  static void insertBatch(UUID id, Instant committedAt) throws Exception {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "INSERT INTO measured_batches (batch_id, instance_id, committed_at)"
                    + " VALUES (?, ?, ?)")) {
      ps.setObject(1, id);
      ps.setObject(2, UUID.randomUUID());
      ps.setTimestamp(3, Timestamp.from(committedAt));
      ps.executeUpdate();
      if (!c.getAutoCommit()) {
        c.commit();
      }
    }
  }

  static List<UUID> batchIds() throws Exception {
    List<UUID> out = new ArrayList<>();
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps = c.prepareStatement("SELECT batch_id FROM measured_batches");
        ResultSet rs = ps.executeQuery()) {
      while (rs.next()) {
        out.add(rs.getObject(1, UUID.class));
      }
    }
    return out;
  }

  static List<String> idempotencyKeys() throws Exception {
    List<String> out = new ArrayList<>();
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT idempotency_key FROM idempotency_keys ORDER BY 1");
        ResultSet rs = ps.executeQuery()) {
      while (rs.next()) {
        out.add(rs.getString(1));
      }
    }
    return out;
  }
}
