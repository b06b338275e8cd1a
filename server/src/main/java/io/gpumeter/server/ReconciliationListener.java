package io.gpumeter.server;

import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.MeasuredTimeRecorder;
import io.gpumeter.metering.StepReport;
import java.util.Objects;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Feeds every {@link StepReport} of one model into the billing {@link MeasuredTimeRecorder}, as the
 * report gives it: measured, charged (the report's sum of its shares, not added up again here) and
 * system time; a charged report counts one step, a system report (load, warm-up) none. Then passes
 * the report on to {@code next} (audits, tests).
 *
 * <p>Two callers, one per kind of report. The server hands it the model's load and warm-up reports
 * once, before the scheduler starts (the counters already hold them, from the model store), and the
 * scheduler then hands it each step's report on the scheduler thread, after the step and before it
 * publishes the usage records of the sequences that finished in it; the recorder stamps the delta
 * with the same UTC clock that stamps those records' {@code finishedAt}. So a step is always
 * counted in the same minute as, or an earlier minute than, the charges of the requests in it,
 * which is what an exact reconciliation needs (billing-api/README.md, Reconciliation). {@code
 * record} does no I/O and, once the model is known, no allocation.
 */
final class ReconciliationListener implements StepListener {
  private static final Logger log = LoggerFactory.getLogger(ReconciliationListener.class);

  private final MeasuredTimeRecorder recorder;
  private final StepListener next;
  private boolean warned; // one writer at a time: the starting thread, then the scheduler thread

  ReconciliationListener(MeasuredTimeRecorder recorder, StepListener next) {
    this.recorder = Objects.requireNonNull(recorder, "recorder");
    this.next = Objects.requireNonNull(next, "next");
  }

  @Override
  public void onStep(StepReport report) {
    try {
      recorder.record(
          report.model(),
          report.device(),
          report.measuredNs(),
          report.chargedNs(),
          report.systemNs(),
          report.kind() == StepReport.Kind.CHARGED ? 1 : 0);
    } catch (RuntimeException e) {
      // Never stop the scheduler for bookkeeping; the gap shows up as drift in the report.
      if (!warned) {
        warned = true;
        log.warn(
            "reconciliation delta for {} not recorded (reported once): {}",
            report.model(),
            e.toString());
      }
    }
    next.onStep(report);
  }
}
