package io.gpumeter.billing;

import java.time.Instant;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.UUID;

/**
 * Measured device time against the ledger over {@code [from, to)} (whole UTC minutes); see {@link
 * io.gpumeter.billing.reconcile.Reconciliation} for the rule.
 *
 * @param from first minute included
 * @param to first minute not included
 * @param lines one per (model, device) seen on either side, sorted
 * @param straddlingAtFrom stored requests started before {@code from} that finished in the range
 *     (some of their steps may lie before it)
 * @param straddlingAtTo stored requests started before {@code to} that finished at or after it,
 *     within a day (some of their steps lie in the range, their charge after it)
 * @param voidedNsByReason device time of the voided records in the range, by {@code
 *     charge_voids.reason} (DESIGN.md invariant 15): charged, then voided, so billed to nobody
 * @param replica the one replica (outbox owner id) the report covers; null for the whole ledger
 * @param replicas one per replica seen on either side (the same time as {@code lines}, grouped by
 *     the replica that measured it instead of by model and device), sorted by id
 */
public record ReconciliationReport(
    Instant from,
    Instant to,
    List<Line> lines,
    long straddlingAtFrom,
    long straddlingAtTo,
    Map<String, Long> voidedNsByReason,
    UUID replica,
    List<ReplicaLine> replicas) {

  /**
   * {@code device_time_minutely.replica} of minutes measured before V23, and the replica that
   * records stored before V23 or without an outbox ({@code usage_records.replica} NULL) count
   * under.
   */
  public static final UUID UNKNOWN_REPLICA = new UUID(0, 0);

  public ReconciliationReport {
    lines = List.copyOf(lines);
    voidedNsByReason = Collections.unmodifiableMap(new TreeMap<>(voidedNsByReason));
    replicas = List.copyOf(replicas);
  }

  /**
   * One replica (an outbox directory, whose owner id survives restarts of the process on it): the
   * measured time it recorded and the charges it stored, over every model and device.
   *
   * @param replica the outbox owner id; {@link #UNKNOWN_REPLICA} for time and charges from before
   *     V23 or stored without an outbox
   * @param measuredNs Σ measured_ns of its minutes in the range
   * @param chargedNs Σ charged_ns of its minutes
   * @param systemNs Σ system_ns of its minutes
   * @param unbilledNs Σ unbilled_ns of its minutes (what its crashed processes handed out but never
   *     stored, settled by its next process)
   * @param steps Σ steps
   * @param ledgerNs Σ device_ns of the records it stored whose finished_at is in the range
   * @param records how many such records
   * @param voidedNs Σ device_ns of those records whose charge was voided
   */
  public record ReplicaLine(
      UUID replica,
      long measuredNs,
      long chargedNs,
      long systemNs,
      long unbilledNs,
      long steps,
      long ledgerNs,
      long records,
      long voidedNs) {

    /** chargedNs - ledgerNs: positive when this replica's charges are missing from the ledger. */
    public long driftNs() {
      return chargedNs - ledgerNs;
    }

    /** measuredNs - chargedNs - systemNs - unbilledNs. */
    public long unattributedNs() {
      return measuredNs - chargedNs - systemNs - unbilledNs;
    }
  }

  /**
   * One model on one device.
   *
   * @param measuredNs Σ measured_ns of the minutes in the range
   * @param chargedNs Σ charged_ns of the minutes in the range: step time handed out to requests
   * @param systemNs Σ system_ns (load, warm-up): never charged
   * @param unbilledNs Σ unbilled_ns: handed out as shares to requests whose charge was never stored
   *     because the process died (settled after the restart, reason {@code crash}); never charged,
   *     and not part of {@code chargedNs}
   * @param steps Σ steps
   * @param ledgerNs Σ device_ns of usage_records whose finished_at is in the range
   * @param records how many such records
   * @param voidedNs Σ device_ns of those records whose charge was voided (the client did not get
   *     the answer): part of {@code ledgerNs}, so drift is unaffected, but billed to nobody
   */
  public record Line(
      String model,
      String device,
      long measuredNs,
      long chargedNs,
      long systemNs,
      long unbilledNs,
      long steps,
      long ledgerNs,
      long records,
      long voidedNs) {

    /** chargedNs - ledgerNs: positive when charges are missing from the ledger. */
    public long driftNs() {
      return chargedNs - ledgerNs;
    }

    /**
     * measuredNs - chargedNs - systemNs - unbilledNs: zero when every measured nanosecond was
     * attributed.
     */
    public long unattributedNs() {
      return measuredNs - chargedNs - systemNs - unbilledNs;
    }
  }

  public long totalDriftNs() {
    long d = 0;
    for (Line l : lines) {
      d += l.driftNs();
    }
    return d;
  }

  /**
   * True when no stored request straddles either boundary: then a healthy server has drift 0 on
   * every line, and any other value is a charge lost or doubled (or still in the outbox).
   */
  public boolean exact() {
    return straddlingAtFrom == 0 && straddlingAtTo == 0;
  }

  /** Every line and every replica has zero drift and zero unattributed time. */
  public boolean balanced() {
    for (Line l : lines) {
      if (l.driftNs() != 0 || l.unattributedNs() != 0) {
        return false;
      }
    }
    for (ReplicaLine r : replicas) {
      if (r.driftNs() != 0 || r.unattributedNs() != 0) {
        return false;
      }
    }
    return true;
  }

  /** Some line or some replica drifts. */
  public boolean drifts() {
    return lines.stream().anyMatch(l -> l.driftNs() != 0)
        || replicas.stream().anyMatch(r -> r.driftNs() != 0);
  }

  /** A fixed-width table for a terminal ({@code gpumeter reconcile}). */
  public String toText() {
    StringBuilder sb = new StringBuilder();
    sb.append("reconciliation [").append(from).append(", ").append(to).append(")");
    if (replica != null) {
      sb.append(" of replica ").append(replica);
    }
    sb.append('\n');
    sb.append(
        String.format(
            "%-24s %-10s %18s %18s %18s %18s %18s %10s %10s%n",
            "model",
            "device",
            "measured_ns",
            "charged_ns",
            "unbilled_ns",
            "ledger_ns",
            "drift_ns",
            "records",
            "steps"));
    for (Line l : lines) {
      sb.append(
          String.format(
              "%-24s %-10s %18d %18d %18d %18d %18d %10d %10d%n",
              l.model(),
              l.device(),
              l.measuredNs(),
              l.chargedNs(),
              l.unbilledNs(),
              l.ledgerNs(),
              l.driftNs(),
              l.records(),
              l.steps()));
    }
    sb.append(
        String.format(
            "%-36s %18s %18s %18s %18s %18s %10s%n",
            "replica",
            "measured_ns",
            "charged_ns",
            "unbilled_ns",
            "ledger_ns",
            "drift_ns",
            "records"));
    for (ReplicaLine r : replicas) {
      sb.append(
          String.format(
              "%-36s %18d %18d %18d %18d %18d %10d%n",
              r.replica(),
              r.measuredNs(),
              r.chargedNs(),
              r.unbilledNs(),
              r.ledgerNs(),
              r.driftNs(),
              r.records()));
    }
    if (!voidedNsByReason.isEmpty()) {
      sb.append("voided (charged, then voided: billed to nobody) by reason: ")
          .append(voidedNsByReason)
          .append('\n');
    }
    sb.append("total drift_ns: ").append(totalDriftNs()).append('\n');
    sb.append("requests straddling from: ")
        .append(straddlingAtFrom)
        .append(", to: ")
        .append(straddlingAtTo)
        .append(exact() ? " (exact: drift must be 0)" : " (boundary effects possible)")
        .append('\n');
    return sb.toString();
  }
}
