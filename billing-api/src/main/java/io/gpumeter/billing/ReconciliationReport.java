package io.gpumeter.billing;

import java.time.Instant;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

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
 */
public record ReconciliationReport(
    Instant from,
    Instant to,
    List<Line> lines,
    long straddlingAtFrom,
    long straddlingAtTo,
    Map<String, Long> voidedNsByReason) {

  public ReconciliationReport {
    lines = List.copyOf(lines);
    voidedNsByReason = Collections.unmodifiableMap(new TreeMap<>(voidedNsByReason));
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

  /** Every line has zero drift and zero unattributed time. */
  public boolean balanced() {
    for (Line l : lines) {
      if (l.driftNs() != 0 || l.unattributedNs() != 0) {
        return false;
      }
    }
    return true;
  }

  /** A fixed-width table for a terminal ({@code gpumeter reconcile}). */
  public String toText() {
    StringBuilder sb = new StringBuilder();
    sb.append("reconciliation [").append(from).append(", ").append(to).append(")\n");
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
