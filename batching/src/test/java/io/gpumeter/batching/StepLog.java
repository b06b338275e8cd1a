package io.gpumeter.batching;

import io.gpumeter.metering.StepReport;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

/** Keeps a copy of every step report (the scheduler reuses its report, so it must be copied). */
final class StepLog implements StepListener {
  final List<StepReport> steps = new CopyOnWriteArrayList<>();

  @Override
  public void onStep(StepReport report) {
    steps.add(report.copy());
  }

  long measured() {
    return steps.stream().mapToLong(StepReport::measuredNs).sum();
  }

  /** The shares of a report added up here, independently of the report's own sum. */
  static long sharesSum(StepReport r) {
    long sum = 0;
    for (int i = 0; i < r.sequences(); i++) {
      sum += r.share(i);
    }
    return sum;
  }
}
