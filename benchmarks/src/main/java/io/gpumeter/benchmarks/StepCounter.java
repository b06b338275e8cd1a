package io.gpumeter.benchmarks;

import io.gpumeter.batching.StepListener;
import io.gpumeter.metering.StepReport;
import java.util.concurrent.locks.LockSupport;

/**
 * Counts the scheduler's steps and wakes one waiting thread when a target step is reached.
 *
 * <p>Cost on the scheduler thread per step: a plain increment, two volatile reads, a compare; a
 * volatile write and an unpark only once per target. The waiter sleeps (parks) meanwhile, so it
 * does not compete for a core with the scheduler it measures.
 *
 * <p>Steady state: once a step had exactly the expected batch (every sequence decoding one token),
 * every later step with a different shape counts as irregular, so a benchmark can refuse results
 * taken while sequences were joining or leaving.
 */
final class StepCounter implements StepListener {
  private final int expectedSequences;
  private long steps; // scheduler thread only
  private volatile long reached;
  private volatile long target = Long.MAX_VALUE;
  private volatile Thread waiter;
  private volatile boolean steady;
  private volatile long irregularSteps;

  /**
   * @param expectedSequences sequences (and tokens) in a steady decode step
   */
  StepCounter(int expectedSequences) {
    this.expectedSequences = expectedSequences;
  }

  @Override
  public void onStep(StepReport report) {
    if (report.kind() != StepReport.Kind.CHARGED) {
      return; // load and warm-up are not scheduler steps
    }
    long s = ++steps;
    boolean regular =
        report.sequences() == expectedSequences
            && report.tokens() == expectedSequences
            && !report.failed();
    if (!steady) {
      if (regular) {
        steady = true;
      }
    } else if (!regular) {
      irregularSteps = irregularSteps + 1; // single writer
    }
    if (s >= target) {
      target = Long.MAX_VALUE;
      reached = s;
      LockSupport.unpark(waiter);
    }
  }

  /** Blocks until the scheduler has run at least {@code step} steps; returns the step reached. */
  long awaitStep(long step) {
    long r = reached;
    if (r >= step) {
      return r;
    }
    waiter = Thread.currentThread();
    target = step;
    while ((r = reached) < step) {
      LockSupport.park(this);
    }
    return r;
  }

  /** Waits for the first steady decode step; returns the step count then. */
  long awaitSteady(long timeoutNanos) {
    long deadline = System.nanoTime() + timeoutNanos;
    long step = reached;
    while (!steady) {
      if (System.nanoTime() - deadline > 0) {
        throw new IllegalStateException(
            "the scheduler never ran a steady step of " + expectedSequences + " sequences");
      }
      step = awaitStep(step + 1);
    }
    return awaitStep(step + 1);
  }

  long irregularSteps() {
    return irregularSteps;
  }
}
