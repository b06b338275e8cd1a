package io.gpumeter.billing.retention;

import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.MaintenanceReport;
import io.gpumeter.billing.RetentionConfig;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.time.Clock;
import java.time.Instant;
import java.time.YearMonth;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Keeps the monthly partitions of {@code usage_records} in shape: creates them ahead, drops whole
 * months older than the retention. Safe to run from every replica at once (a PostgreSQL advisory
 * lock lets one run; the others skip), and to run again after a failure (every step checks the
 * catalog first).
 *
 * <p>One {@link #run()}, with {@code cutoff = now - retention}:
 *
 * <ol>
 *   <li><b>Create</b> a partition {@code usage_records_pYYYY_MM} (UTC months, {@code [first
 *       instant, first instant of the next month)}) for every month from the one holding {@code
 *       cutoff} to {@link RetentionConfig#monthsAhead()} months after the current one. Rows that
 *       landed in {@code usage_records_default} for that month are moved into it in the same
 *       transaction (create, move, {@code ATTACH PARTITION}).
 *   <li><b>Drop</b> every monthly partition whose end is at or before {@code cutoff}: a whole
 *       month, instantly, no row-by-row delete. So raw records are kept at least the retention, at
 *       most a month longer.
 *   <li><b>Delete</b> rows older than {@code cutoff} from the default partition (records for months
 *       that never had a partition: far past).
 *   <li><b>Prune</b> request-id claims ({@code usage_request_ids}) older than the oldest month
 *       still kept, in batches, so a claim never disappears before its raw row; and {@code
 *       device_time_minutely} rows older than {@code cutoff}.
 *   <li><b>Prune</b> {@code measured_batches} claims committed before {@code cutoff} minus {@link
 *       #MEASURED_BATCH_MARGIN}. Safe: a batch holds the measured time of minutes up to its commit
 *       (clock skew between server and database well under the margin), so every minute it could
 *       add to again if it were replayed after its claim is gone (a quarantined segment re-applied
 *       months later) is older than {@code cutoff}: its rows were already pruned by the step
 *       before, and the next run prunes them again. No minute inside the retention can be counted
 *       twice.
 *   <li><b>Prune</b> expired {@code idempotency_keys} rows ({@code expires_at <= now}: 24 h after
 *       their claim). An expired row counts as absent even before it is pruned.
 * </ol>
 *
 * {@code usage_hourly} is never touched: rollups are kept for good. DDL runs with a 5 s {@code
 * lock_timeout}, so maintenance never queues up the ledger's inserts behind a long query; a step
 * that times out is retried at the next run.
 */
public final class MaintenanceTask {
  private static final Logger LOG = LoggerFactory.getLogger(MaintenanceTask.class);
  static final String PARENT = "usage_records";
  static final String DEFAULT_PARTITION = "usage_records_default";
  private static final Pattern MONTHLY = Pattern.compile("usage_records_p(\\d{4})_(\\d{2})");

  /** pg_try_advisory_lock key: "gpmt". */
  private static final long LOCK_KEY = 0x67706D74L;

  private static final int PRUNE_BATCH = 10_000;

  /** How much older than the retention cutoff a measured-batch claim must be to be pruned. */
  public static final java.time.Duration MEASURED_BATCH_MARGIN = java.time.Duration.ofDays(1);

  private final DataSource dataSource;
  private final RetentionConfig config;
  private final Clock clock;

  public MaintenanceTask(DataSource dataSource, RetentionConfig config, Clock clock) {
    this.dataSource = Objects.requireNonNull(dataSource, "dataSource");
    this.config = Objects.requireNonNull(config, "config");
    this.clock = Objects.requireNonNull(clock, "clock");
  }

  public RetentionConfig config() {
    return config;
  }

  /** The partition holding {@code month}: {@code usage_records_pYYYY_MM}. */
  public static String partitionName(YearMonth month) {
    return String.format("usage_records_p%04d_%02d", month.getYear(), month.getMonthValue());
  }

  static Instant start(YearMonth m) {
    return m.atDay(1).atStartOfDay().toInstant(ZoneOffset.UTC);
  }

  private static String literal(YearMonth m) {
    return String.format("'%04d-%02d-01 00:00:00+00'", m.getYear(), m.getMonthValue());
  }

  /**
   * Runs the steps above once.
   *
   * @throws BillingException if the database fails (steps done before the failure stay done)
   */
  public MaintenanceReport run() {
    Instant now = clock.instant();
    Instant cutoff = now.minus(config.retention());
    YearMonth first = YearMonth.from(cutoff.atZone(ZoneOffset.UTC));
    YearMonth last = YearMonth.from(now.atZone(ZoneOffset.UTC)).plusMonths(config.monthsAhead());
    List<String> created = new ArrayList<>();
    List<String> dropped = new ArrayList<>();
    long moved = 0;
    try (Connection c = dataSource.getConnection()) {
      c.setAutoCommit(true);
      if (!advisoryLock(c, "pg_try_advisory_lock")) {
        LOG.debug("Partition maintenance skipped: another replica holds the lock");
        return new MaintenanceReport(true, List.of(), List.of(), 0, 0, 0, 0, 0, 0);
      }
      try {
        TreeSet<YearMonth> existing = monthlyPartitions(c);
        for (YearMonth m = first; !m.isAfter(last); m = m.plusMonths(1)) {
          if (!existing.contains(m)) {
            moved += createPartition(c, m);
            existing.add(m);
            created.add(partitionName(m));
          }
        }
        for (YearMonth m : List.copyOf(existing)) {
          if (!start(m.plusMonths(1)).isAfter(cutoff)) {
            dropPartition(c, m);
            existing.remove(m);
            dropped.add(partitionName(m));
          }
        }
        long deleted =
            update(c, "DELETE FROM " + DEFAULT_PARTITION + " WHERE finished_at < ?", cutoff);
        Instant claimsBefore = start(first);
        if (!existing.isEmpty() && start(existing.first()).isBefore(claimsBefore)) {
          claimsBefore = start(existing.first());
        }
        long claims = pruneClaims(c, claimsBefore);
        long minutes = update(c, "DELETE FROM device_time_minutely WHERE minute < ?", cutoff);
        long batches =
            inBatches(
                c,
                "DELETE FROM measured_batches WHERE batch_id IN (SELECT batch_id FROM"
                    + " measured_batches WHERE committed_at < ? LIMIT "
                    + PRUNE_BATCH
                    + ")",
                cutoff.minus(MEASURED_BATCH_MARGIN));
        long idempotency = update(c, "DELETE FROM idempotency_keys WHERE expires_at <= ?", now);
        MaintenanceReport report =
            new MaintenanceReport(
                false, created, dropped, moved, deleted, claims, minutes, batches, idempotency);
        if (!created.isEmpty()
            || !dropped.isEmpty()
            || deleted > 0
            || claims > 0
            || batches > 0
            || idempotency > 0) {
          LOG.info("Partition maintenance: {}", report);
        }
        return report;
      } finally {
        advisoryLock(c, "pg_advisory_unlock");
      }
    } catch (SQLException e) {
      throw new BillingException(
          "partition maintenance failed (created " + created + ", dropped " + dropped + ")", e);
    }
  }

  private static boolean advisoryLock(Connection c, String function) throws SQLException {
    try (PreparedStatement ps = c.prepareStatement("SELECT " + function + "(?)")) {
      ps.setLong(1, LOCK_KEY);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getBoolean(1);
      }
    }
  }

  /** Months that have a {@code usage_records_pYYYY_MM} partition. */
  static TreeSet<YearMonth> monthlyPartitions(Connection c) throws SQLException {
    TreeSet<YearMonth> out = new TreeSet<>();
    try (Statement s = c.createStatement();
        ResultSet rs =
            s.executeQuery(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    + " WHERE i.inhparent = '"
                    + PARENT
                    + "'::regclass")) {
      while (rs.next()) {
        Matcher m = MONTHLY.matcher(rs.getString(1));
        if (m.matches()) {
          out.add(YearMonth.of(Integer.parseInt(m.group(1)), Integer.parseInt(m.group(2))));
        }
      }
    }
    return out;
  }

  /**
   * Creates the month's partition, moving its rows out of the default partition; one transaction.
   */
  private static long createPartition(Connection c, YearMonth m) throws SQLException {
    String name = partitionName(m);
    c.setAutoCommit(false);
    try (Statement s = c.createStatement()) {
      s.execute("SET LOCAL lock_timeout = '5s'");
      // ATTACH takes this lock anyway; taking it first keeps new rows for the month out of the
      // default partition between the move and the attach.
      s.execute("LOCK TABLE " + DEFAULT_PARTITION + " IN ACCESS EXCLUSIVE MODE");
      s.execute(
          "CREATE TABLE "
              + name
              + " (LIKE "
              + PARENT
              + " INCLUDING DEFAULTS INCLUDING CONSTRAINTS)");
      long moved =
          s.executeUpdate(
              "WITH moved AS (DELETE FROM "
                  + DEFAULT_PARTITION
                  + " WHERE finished_at >= "
                  + literal(m)
                  + " AND finished_at < "
                  + literal(m.plusMonths(1))
                  + " RETURNING *) INSERT INTO "
                  + name
                  + " SELECT * FROM moved");
      s.execute(
          "ALTER TABLE "
              + PARENT
              + " ATTACH PARTITION "
              + name
              + " FOR VALUES FROM ("
              + literal(m)
              + ") TO ("
              + literal(m.plusMonths(1))
              + ")");
      c.commit();
      if (moved > 0) {
        LOG.info("Moved {} usage records from {} into {}", moved, DEFAULT_PARTITION, name);
      }
      return moved;
    } catch (SQLException | RuntimeException e) {
      c.rollback();
      throw e;
    } finally {
      c.setAutoCommit(true);
    }
  }

  private static void dropPartition(Connection c, YearMonth m) throws SQLException {
    String name = partitionName(m);
    c.setAutoCommit(false);
    try (Statement s = c.createStatement()) {
      s.execute("SET LOCAL lock_timeout = '5s'");
      s.execute("DROP TABLE " + name);
      c.commit();
      LOG.info("Dropped partition {} (older than the retention)", name);
    } catch (SQLException | RuntimeException e) {
      c.rollback();
      throw e;
    } finally {
      c.setAutoCommit(true);
    }
  }

  private static long pruneClaims(Connection c, Instant before) throws SQLException {
    long total = 0;
    try (PreparedStatement ps =
        c.prepareStatement(
            "DELETE FROM usage_request_ids WHERE request_id IN (SELECT request_id FROM"
                + " usage_request_ids WHERE finished_at < ? LIMIT "
                + PRUNE_BATCH
                + ")")) {
      ps.setTimestamp(1, Timestamp.from(before));
      int n;
      do {
        n = ps.executeUpdate();
        total += n;
      } while (n == PRUNE_BATCH);
    }
    return total;
  }

  /** Runs {@code sql} (a delete of at most {@link #PRUNE_BATCH} rows) until it deletes fewer. */
  private static long inBatches(Connection c, String sql, Instant t) throws SQLException {
    long total = 0;
    long n;
    do {
      n = update(c, sql, t);
      total += n;
    } while (n == PRUNE_BATCH);
    return total;
  }

  private static long update(Connection c, String sql, Instant t) throws SQLException {
    try (PreparedStatement ps = c.prepareStatement(sql)) {
      ps.setTimestamp(1, Timestamp.from(t));
      return ps.executeUpdate();
    }
  }
}
