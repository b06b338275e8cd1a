package io.gpumeter.server;

import io.gpumeter.batching.StepListener;
import io.gpumeter.metering.StepReport;

/**
 * Feeds one model's step histograms ({@code gpumeter_step_duration_seconds}, {@code
 * gpumeter_sequences_per_step}) from its scheduler's charged step reports, then passes every report
 * on. System reports (load, warm-up) are not scheduler steps and are not observed. Runs on the
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
  public void onStep(StepReport report) {
    if (report.kind() == StepReport.Kind.CHARGED) {
      metrics.observeStep(report.measuredNs(), report.sequences());
    }
    next.onStep(report);
  }
}
