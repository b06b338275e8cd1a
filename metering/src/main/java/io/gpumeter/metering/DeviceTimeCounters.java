package io.gpumeter.metering;

import java.util.concurrent.atomic.AtomicLong;

/**
 * Running totals of measured device time for one model on one device, for conservation checks,
 * metrics and reconciliation: {@code measuredNs == chargedNs + systemNs} whenever no step is in
 * flight.
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

  /** A request step: measured time, all of it handed out as shares to requests. */
  public void recordChargedStep(long measured, int sequences, int tokens) {
    measuredNs.addAndGet(measured);
    chargedNs.addAndGet(measured);
    steps.incrementAndGet();
    stepTokens.addAndGet(tokens);
    stepSequences.addAndGet(sequences);
    if (sequences > 1) {
      multiSequenceSteps.incrementAndGet();
    }
  }

  /** Time measured outside any request (model load, warm-up): never charged. */
  public void recordSystem(long measured) {
    measuredNs.addAndGet(measured);
    systemNs.addAndGet(measured);
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
