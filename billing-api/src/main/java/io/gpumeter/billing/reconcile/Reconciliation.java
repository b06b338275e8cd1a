package io.gpumeter.billing.reconcile;

import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.MeasuredTimeRecorder;
import io.gpumeter.billing.PendingMeasuredTime;
import io.gpumeter.billing.ReconciliationReport;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.time.Clock;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import javax.sql.DataSource;

/**
 * Compares the device time the schedulers handed out ({@code device_time_minutely.charged_ns},
 * written by {@link ReconciliationRecorder}) with what reached the ledger ({@code
 * usage_records.device_ns}), per model and device.
 *
 * <p><b>Rule.</b> Over a range {@code [from, to)} of whole UTC minutes: {@code drift = Σ charged_ns
 * of the minutes in the range − Σ device_ns of the records whose finished_at is in the range}. Step
 * time counts in the minute it was recorded (after the step), a request's charge in the minute it
 * finished. A request whose steps and finish all lie inside the range counts on both sides; one
 * that started before {@code from} and finished inside, or started inside and finished at or after
 * {@code to}, counts on one side only. So on a healthy server drift is exactly 0 whenever no
 * request straddles a boundary, which the report checks on the ledger side: {@link
 * ReconciliationReport#exact()} is true when no stored request has {@code started_at < from <=
 * finished_at < to} or {@code started_at < to <= finished_at} (the latter looked for up to a day
 * after {@code to}). {@code started_at} is the submission time, before any step, so the check is
 * conservative. Pick boundaries at quiet moments (or accept a small boundary drift with {@code
 * exact() == false}); over a long range that drift is bounded by the in-flight requests at the two
 * ends.
 *
 * <p><b>Voided charges</b> (DESIGN.md invariant 15) stay in {@code usage_records} for audit, so
 * they count on the ledger side and drift is unaffected; each line also reports their device time
 * as {@code voidedNs} (measured and handed out, but billed to nobody), and the report sums it by
 * reason.
 *
 * <p>Preconditions for an exact zero: the recorder used the same clock as {@code finishedAt}, the
 * step of a request was recorded before its record was published, the recorder has flushed (a
 * minute; {@link #report} flushes first), every record reached the database (the outbox is empty),
 * requests finishing just before {@code to} have been written, and the raw records are still within
 * the retention. A positive drift is time handed out but not in the ledger (lost, or still queued
 * or in the outbox); a negative one is a charge counted twice or a record without metered steps.
 */
public final class Reconciliation {
  private final DataSource dataSource;
  private final ReconciliationRecorder recorder;
  private final Runnable writeMeasured;

  /** Reports only: nothing is recorded through this object. */
  public Reconciliation(DataSource dataSource) {
    this.dataSource = Objects.requireNonNull(dataSource, "dataSource");
    this.recorder = null;
    this.writeMeasured = null;
  }

  private Reconciliation(
      DataSource dataSource, ReconciliationRecorder recorder, Runnable writeMeasured) {
    this.dataSource = Objects.requireNonNull(dataSource, "dataSource");
    this.recorder = recorder;
    this.writeMeasured = Objects.requireNonNull(writeMeasured, "writeMeasured");
  }

  /**
   * Reports, and records the measured side: {@link #measuredTime()} adds per-minute deltas in
   * memory (by the minute of {@code clock}, which must be the clock that stamps {@code
   * finishedAt}); the ledger takes them from {@link #pendingMeasuredTime()} and makes them durable
   * with its batches. {@code writeMeasured} makes what is pending durable now (the ledger's {@code
   * flushMeasured}); a report runs it first.
   */
  public static Reconciliation recording(
      DataSource dataSource, Clock clock, Runnable writeMeasured) {
    return new Reconciliation(dataSource, new ReconciliationRecorder(clock), writeMeasured);
  }

  /**
   * Where measured, charged and system device time is recorded.
   *
   * @throws IllegalStateException if this object was made for reports only
   */
  public MeasuredTimeRecorder measuredTime() {
    if (recorder == null) {
      throw new IllegalStateException("this Reconciliation only reports; use recording(...)");
    }
    return recorder;
  }

  /**
   * What was recorded through {@link #measuredTime()} and is not durable yet, for the ledger.
   *
   * @throws IllegalStateException if this object was made for reports only
   */
  public PendingMeasuredTime pendingMeasuredTime() {
    if (recorder == null) {
      throw new IllegalStateException("this Reconciliation only reports; use recording(...)");
    }
    return recorder;
  }

  /**
   * Reports over {@code [from, to)}, widened to whole minutes: {@code from} rounded down, {@code
   * to} rounded up.
   *
   * <p>A recording {@code Reconciliation} first writes what its recorder holds, so the minutes up
   * to now are in the report.
   *
   * @throws IllegalArgumentException if {@code to} is not after {@code from}
   * @throws BillingException if the database fails
   */
  public ReconciliationReport report(Instant from, Instant to) {
    Objects.requireNonNull(from, "from");
    Objects.requireNonNull(to, "to");
    Instant start = from.truncatedTo(ChronoUnit.MINUTES);
    Instant end = to.truncatedTo(ChronoUnit.MINUTES);
    if (end.isBefore(to)) {
      end = end.plus(1, ChronoUnit.MINUTES);
    }
    if (!end.isAfter(start)) {
      throw new IllegalArgumentException("to (" + to + ") must be after from (" + from + ")");
    }
    if (writeMeasured != null) {
      writeMeasured.run();
    }
    Map<String, long[]> measured = new TreeMap<>();
    Map<String, long[]> ledger = new TreeMap<>();
    Map<String, Long> voidedByReason = new TreeMap<>();
    long atFrom;
    long atTo;
    try (Connection c = dataSource.getConnection()) {
      try (PreparedStatement ps =
          c.prepareStatement(
              "SELECT model, device, sum(measured_ns)::int8, sum(charged_ns)::int8,"
                  + " sum(system_ns)::int8, sum(steps)::int8, sum(unbilled_ns)::int8"
                  + " FROM device_time_minutely"
                  + " WHERE minute >= ? AND minute < ? GROUP BY model, device")) {
        ps.setTimestamp(1, Timestamp.from(start));
        ps.setTimestamp(2, Timestamp.from(end));
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            measured.put(
                key(rs.getString(1), rs.getString(2)),
                new long[] {
                  rs.getLong(3), rs.getLong(4), rs.getLong(5), rs.getLong(6), rs.getLong(7)
                });
          }
        }
      }
      try (PreparedStatement ps =
          c.prepareStatement(
              "SELECT r.model, r.device, sum(r.device_ns)::int8, count(*),"
                  + " coalesce(sum(r.device_ns) FILTER (WHERE v.request_id IS NOT NULL), 0)::int8"
                  + " FROM usage_records r LEFT JOIN charge_voids v USING (request_id)"
                  + " WHERE r.finished_at >= ? AND r.finished_at < ? GROUP BY r.model, r.device")) {
        ps.setTimestamp(1, Timestamp.from(start));
        ps.setTimestamp(2, Timestamp.from(end));
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            ledger.put(
                key(rs.getString(1), rs.getString(2)),
                new long[] {rs.getLong(3), rs.getLong(4), rs.getLong(5)});
          }
        }
      }
      try (PreparedStatement ps =
          c.prepareStatement(
              "SELECT v.reason, sum(r.device_ns)::int8, count(*)"
                  + " FROM usage_records r JOIN charge_voids v USING (request_id)"
                  + " WHERE r.finished_at >= ? AND r.finished_at < ?"
                  + " GROUP BY v.reason ORDER BY v.reason")) {
        ps.setTimestamp(1, Timestamp.from(start));
        ps.setTimestamp(2, Timestamp.from(end));
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            voidedByReason.put(rs.getString(1), rs.getLong(2));
          }
        }
      }
      atFrom =
          count(
              c,
              "SELECT count(*) FROM usage_records WHERE finished_at >= ? AND finished_at < ?"
                  + " AND started_at < ?",
              start,
              end,
              start);
      atTo =
          count(
              c,
              "SELECT count(*) FROM usage_records WHERE finished_at >= ? AND finished_at < ?"
                  + " AND started_at < ?",
              end,
              end.plus(1, ChronoUnit.DAYS),
              end);
    } catch (SQLException e) {
      throw new BillingException("could not compute the reconciliation report", e);
    }
    TreeMap<String, ReconciliationReport.Line> lines = new TreeMap<>();
    for (Map.Entry<String, long[]> e : measured.entrySet()) {
      String[] md = e.getKey().split("\u0000", 2);
      long[] m = e.getValue();
      long[] l = ledger.getOrDefault(e.getKey(), new long[3]);
      lines.put(
          e.getKey(),
          new ReconciliationReport.Line(
              md[0], md[1], m[0], m[1], m[2], m[4], m[3], l[0], l[1], l[2]));
    }
    for (Map.Entry<String, long[]> e : ledger.entrySet()) {
      if (!lines.containsKey(e.getKey())) {
        String[] md = e.getKey().split("\u0000", 2);
        long[] l = e.getValue();
        lines.put(
            e.getKey(),
            new ReconciliationReport.Line(md[0], md[1], 0, 0, 0, 0, 0, l[0], l[1], l[2]));
      }
    }
    return new ReconciliationReport(
        start, end, new ArrayList<>(lines.values()), atFrom, atTo, voidedByReason);
  }

  private static String key(String model, String device) {
    return model + '\u0000' + device;
  }

  private static long count(Connection c, String sql, Instant a, Instant b, Instant d)
      throws SQLException {
    try (PreparedStatement ps = c.prepareStatement(sql)) {
      ps.setTimestamp(1, Timestamp.from(a));
      ps.setTimestamp(2, Timestamp.from(b));
      ps.setTimestamp(3, Timestamp.from(d));
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }
}
