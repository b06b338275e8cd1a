package io.gpumeter.server;

import io.gpumeter.batching.StepListener;

/**
 * Feeds one model's step histograms ({@code gpumeter_step_duration_seconds}, {@code
 * gpumeter_sequences_per_step}) from its scheduler's steps, then passes the step on. Runs on the
 * scheduler thread and allocates nothing of its own.
 */
final class StepMetricsListener implements StepListener {
  private final ModelMetrics metrics;
  private final StepListener next;

  StepMetricsListener(ModelMetrics metrics, StepListener next) {
    this.metrics = metrics;
    this.next = next;
  }

  @Override
  public void onStep(long measuredNs, long[] shares, int sequences, int tokens, boolean failed) {
    metrics.observeStep(measuredNs, sequences);
    next.onStep(measuredNs, shares, sequences, tokens, failed);
  }
}
