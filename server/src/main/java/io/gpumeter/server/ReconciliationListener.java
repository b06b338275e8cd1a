package io.gpumeter.server;

import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.MeasuredTimeRecorder;
import java.util.Objects;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Feeds every measured step of one model's scheduler into the billing {@link
 * MeasuredTimeRecorder}: measured = the step's device time, charged = the sum of the shares it
 * handed out, system = 0, one step. Then passes the step on to {@code next} (audits, tests).
 *
 * <p>Runs on the scheduler thread, which calls step listeners after the step and before it
 * publishes the usage records of the sequences that finished in it; the recorder stamps the delta
 * with the same UTC clock that stamps those records' {@code finishedAt}. So a step is always
 * counted in the same minute as, or an earlier minute than, the charges of the requests in it,
 * which is what an exact reconciliation needs (billing-api/README.md, Reconciliation). {@code
 * record} does no I/O and, once the model is known, no allocation.
 */
final class ReconciliationListener implements StepListener {
  private static final Logger log = LoggerFactory.getLogger(ReconciliationListener.class);

  private final MeasuredTimeRecorder recorder;
  private final String model;
  private final String device;
  private final StepListener next;
  private boolean warned; // scheduler thread only

  ReconciliationListener(
      MeasuredTimeRecorder recorder, String model, String device, StepListener next) {
    this.recorder = Objects.requireNonNull(recorder, "recorder");
    this.model = Objects.requireNonNull(model, "model");
    this.device = Objects.requireNonNull(device, "device");
    this.next = Objects.requireNonNull(next, "next");
  }

  @Override
  public void onStep(long measuredNs, long[] shares, int sequences, int tokens, boolean failed) {
    long charged = 0;
    for (int i = 0; i < sequences; i++) {
      charged += shares[i];
    }
    try {
      recorder.record(model, device, measuredNs, charged, 0, 1);
    } catch (RuntimeException e) {
      // Never stop the scheduler for bookkeeping; the gap shows up as drift in the report.
      if (!warned) {
        warned = true;
        log.warn(
            "reconciliation delta for {} not recorded (reported once): {}", model, e.toString());
      }
    }
    next.onStep(measuredNs, shares, sequences, tokens, failed);
  }
}
