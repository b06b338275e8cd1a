package io.gpumeter.metering;

import java.util.concurrent.atomic.AtomicLong;

/**
 * Running totals of measured device time for one model on one device, for conservation checks,
 * metrics and reconciliation: {@code measuredNs == chargedNs + systemNs} whenever no step is in
 * flight.
 *
 * <p>Fed only with {@link StepReport}s: the model store records its load and warm-up (system)
 * reports, then the scheduler records one charged report per step.
 *
 * <p>Concurrency: written by one scheduler thread (and the loader before serving), read by any
 * thread; plain atomics, no locks.
 */
public final class DeviceTimeCounters {
  private final AtomicLong measuredNs = new AtomicLong();
  private final AtomicLong chargedNs = new AtomicLong();
  private final AtomicLong systemNs = new AtomicLong();
  private final AtomicLong steps = new AtomicLong();
  private final AtomicLong stepTokens = new AtomicLong();
  private final AtomicLong stepSequences = new AtomicLong();
  private final AtomicLong multiSequenceSteps = new AtomicLong();

  /**
   * Adds one step report: its measured, charged and system time as the report gives them (the
   * shares are not added up again here). Charged steps also count as steps, with their tokens and
   * sequences; system steps (load, warm-up) do not.
   */
  public void record(StepReport report) {
    measuredNs.addAndGet(report.measuredNs());
    chargedNs.addAndGet(report.chargedNs());
    systemNs.addAndGet(report.systemNs());
    if (report.kind() == StepReport.Kind.CHARGED) {
      int sequences = report.sequences();
      steps.incrementAndGet();
      stepTokens.addAndGet(report.tokens());
      stepSequences.addAndGet(sequences);
      if (sequences > 1) {
        multiSequenceSteps.incrementAndGet();
      }
    }
  }

  public Snapshot snapshot() {
    // read charged and system before measured is not enough under concurrent writes; callers
    // that check conservation do so when the scheduler is idle.
    return new Snapshot(
        measuredNs.get(),
        chargedNs.get(),
        systemNs.get(),
        steps.get(),
        stepTokens.get(),
        stepSequences.get(),
        multiSequenceSteps.get());
  }

  /** Point-in-time totals. */
  public record Snapshot(
      long measuredNs,
      long chargedNs,
      long systemNs,
      long steps,
      long stepTokens,
      long stepSequences,
      long multiSequenceSteps) {}
}
