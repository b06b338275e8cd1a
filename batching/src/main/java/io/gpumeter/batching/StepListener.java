package io.gpumeter.batching;

import io.gpumeter.metering.StepReport;

/**
 * Observes every step's {@link StepReport} on the scheduler thread, after the step's time was split
 * and recorded in the counters, and before the usage records of the sequences that finished in it
 * are published. The server's reconciliation feed is one; metrics, audits and tests are others. The
 * server also hands each model's system reports (load, warm-up) to its listener once, before the
 * scheduler starts.
 *
 * <p>Must not block. The report is reused for the next step: read it during the call, and keep only
 * {@link StepReport#copy()}.
 */
@FunctionalInterface
public interface StepListener {
  StepListener NONE = report -> {};

  void onStep(StepReport report);
}
