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
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.UUID;
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
   * to} rounded up; the whole ledger, with one {@link ReconciliationReport.ReplicaLine} per
   * replica.
   *
   * <p>A recording {@code Reconciliation} first writes what its recorder holds, so the minutes up
   * to now are in the report.
   *
   * @throws IllegalArgumentException if {@code to} is not after {@code from}
   * @throws BillingException if the database fails
   */
  public ReconciliationReport report(Instant from, Instant to) {
    return report(from, to, null);
  }

  /**
   * Like {@link #report(Instant, Instant)}, over one replica's measured time and charges only
   * ({@code replica}: an outbox owner id, {@code device_time_minutely.replica} and {@code
   * usage_records.replica}; {@link ReconciliationReport#UNKNOWN_REPLICA} for what was stored before
   * V23 or without an outbox); null for the whole ledger. A replica's drift is 0 on its own: a
   * charge is stored by the replica whose scheduler split it (its outbox is replayed only by a
   * process on the same directory), and a crashed process's unstored shares are settled as unbilled
   * in that replica's own minutes.
   *
   * @throws IllegalArgumentException if {@code to} is not after {@code from}
   * @throws BillingException if the database fails
   */
  public ReconciliationReport report(Instant from, Instant to, UUID replica) {
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
    String scope = replica == null ? "" : " AND " + LEDGER_REPLICA + " = ?::uuid";
    // measured: model, device, replica -> measured, charged, system, steps, unbilled
    Map<List<String>, long[]> measured = new TreeMap<>(KEY_ORDER);
    // ledger: model, device, replica -> device_ns, records, voided device_ns
    Map<List<String>, long[]> ledger = new TreeMap<>(KEY_ORDER);
    Map<String, Long> voidedByReason = new TreeMap<>();
    long atFrom;
    long atTo;
    try (Connection c = dataSource.getConnection()) {
      try (PreparedStatement ps =
          c.prepareStatement(
              "SELECT model, device, replica::text, sum(measured_ns)::int8, sum(charged_ns)::int8,"
                  + " sum(system_ns)::int8, sum(steps)::int8, sum(unbilled_ns)::int8"
                  + " FROM device_time_minutely WHERE minute >= ? AND minute < ?"
                  + (replica == null ? "" : " AND replica = ?::uuid")
                  + " GROUP BY model, device, replica")) {
        bindRange(ps, start, end, replica);
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            measured.put(
                List.of(rs.getString(1), rs.getString(2), rs.getString(3)),
                new long[] {
                  rs.getLong(4), rs.getLong(5), rs.getLong(6), rs.getLong(7), rs.getLong(8)
                });
          }
        }
      }
      try (PreparedStatement ps =
          c.prepareStatement(
              "SELECT r.model, r.device, "
                  + LEDGER_REPLICA
                  + "::text, sum(r.device_ns)::int8, count(*),"
                  + " coalesce(sum(r.device_ns) FILTER (WHERE v.request_id IS NOT NULL), 0)::int8"
                  + " FROM usage_records r LEFT JOIN charge_voids v USING (request_id)"
                  + " WHERE r.finished_at >= ? AND r.finished_at < ?"
                  + scope
                  + " GROUP BY 1, 2, 3")) {
        bindRange(ps, start, end, replica);
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            ledger.put(
                List.of(rs.getString(1), rs.getString(2), rs.getString(3)),
                new long[] {rs.getLong(4), rs.getLong(5), rs.getLong(6)});
          }
        }
      }
      try (PreparedStatement ps =
          c.prepareStatement(
              "SELECT v.reason, sum(r.device_ns)::int8, count(*)"
                  + " FROM usage_records r JOIN charge_voids v USING (request_id)"
                  + " WHERE r.finished_at >= ? AND r.finished_at < ?"
                  + scope
                  + " GROUP BY v.reason ORDER BY v.reason")) {
        bindRange(ps, start, end, replica);
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            voidedByReason.put(rs.getString(1), rs.getLong(2));
          }
        }
      }
      String straddling =
          "SELECT count(*) FROM usage_records r WHERE r.finished_at >= ? AND r.finished_at < ?"
              + " AND r.started_at < ?"
              + scope;
      atFrom = count(c, straddling, start, end, start, replica);
      atTo = count(c, straddling, end, end.plus(1, ChronoUnit.DAYS), end, replica);
    } catch (SQLException e) {
      throw new BillingException("could not compute the reconciliation report", e);
    }
    // lines: model, device -> measured(5) + ledger(3); replicas: replica -> the same
    Map<List<String>, long[]> byDevice = new TreeMap<>(KEY_ORDER);
    Map<String, long[]> byReplica = new TreeMap<>();
    for (Map.Entry<List<String>, long[]> e : measured.entrySet()) {
      List<String> k = e.getKey();
      add(byDevice.computeIfAbsent(List.of(k.get(0), k.get(1)), x -> new long[8]), 0, e.getValue());
      add(byReplica.computeIfAbsent(k.get(2), x -> new long[8]), 0, e.getValue());
    }
    for (Map.Entry<List<String>, long[]> e : ledger.entrySet()) {
      List<String> k = e.getKey();
      add(byDevice.computeIfAbsent(List.of(k.get(0), k.get(1)), x -> new long[8]), 5, e.getValue());
      add(byReplica.computeIfAbsent(k.get(2), x -> new long[8]), 5, e.getValue());
    }
    List<ReconciliationReport.Line> lines = new ArrayList<>(byDevice.size());
    byDevice.forEach(
        (k, a) ->
            lines.add(
                new ReconciliationReport.Line(
                    k.get(0), k.get(1), a[0], a[1], a[2], a[4], a[3], a[5], a[6], a[7])));
    List<ReconciliationReport.ReplicaLine> replicas = new ArrayList<>(byReplica.size());
    byReplica.forEach(
        (k, a) ->
            replicas.add(
                new ReconciliationReport.ReplicaLine(
                    UUID.fromString(k), a[0], a[1], a[2], a[4], a[3], a[5], a[6], a[7])));
    return new ReconciliationReport(
        start, end, lines, atFrom, atTo, voidedByReason, replica, replicas);
  }

  /** The replica a stored record counts under: NULL (before V23, no outbox) is the nil UUID. */
  private static final String LEDGER_REPLICA =
      "coalesce(r.replica, '00000000-0000-0000-0000-000000000000'::uuid)";

  private static final Comparator<List<String>> KEY_ORDER =
      (a, b) -> {
        for (int i = 0; i < a.size(); i++) {
          int c = a.get(i).compareTo(b.get(i));
          if (c != 0) {
            return c;
          }
        }
        return 0;
      };

  private static void add(long[] into, int offset, long[] values) {
    for (int i = 0; i < values.length; i++) {
      into[offset + i] += values[i];
    }
  }

  private static void bindRange(PreparedStatement ps, Instant start, Instant end, UUID replica)
      throws SQLException {
    ps.setTimestamp(1, Timestamp.from(start));
    ps.setTimestamp(2, Timestamp.from(end));
    if (replica != null) {
      ps.setString(3, replica.toString());
    }
  }

  private static long count(Connection c, String sql, Instant a, Instant b, Instant d, UUID replica)
      throws SQLException {
    try (PreparedStatement ps = c.prepareStatement(sql)) {
      ps.setTimestamp(1, Timestamp.from(a));
      ps.setTimestamp(2, Timestamp.from(b));
      ps.setTimestamp(3, Timestamp.from(d));
      if (replica != null) {
        ps.setString(4, replica.toString());
      }
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }
}
