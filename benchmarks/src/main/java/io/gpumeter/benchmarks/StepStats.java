package io.gpumeter.benchmarks;

import io.gpumeter.batching.StepListener;
import io.gpumeter.metering.StepReport;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicLong;

/** Totals of the scheduler's charged steps, from its {@link StepListener} (scheduler thread). */
final class StepStats implements StepListener {
  private final AtomicLong steps = new AtomicLong();
  private final AtomicLong sequences = new AtomicLong();
  private final AtomicLong tokens = new AtomicLong();
  private final AtomicLong measuredNs = new AtomicLong();

  @Override
  public void onStep(StepReport report) {
    if (report.kind() != StepReport.Kind.CHARGED) {
      return; // the server also hands over load and warm-up, which are not scheduler steps
    }
    steps.incrementAndGet();
    sequences.addAndGet(report.sequences());
    tokens.addAndGet(report.tokens());
    measuredNs.addAndGet(report.measuredNs());
  }

  Snapshot snapshot() {
    return new Snapshot(steps.get(), sequences.get(), tokens.get(), measuredNs.get());
  }

  record Snapshot(long steps, long sequences, long tokens, long measuredNs) {
    static final Snapshot ZERO = new Snapshot(0, 0, 0, 0);

    Snapshot plus(Snapshot o) {
      return new Snapshot(
          steps + o.steps, sequences + o.sequences, tokens + o.tokens, measuredNs + o.measuredNs);
    }

    Snapshot minus(Snapshot o) {
      return new Snapshot(
          steps - o.steps, sequences - o.sequences, tokens - o.tokens, measuredNs - o.measuredNs);
    }

    String describe(double seconds) {
      if (steps == 0) {
        return "no steps";
      }
      return String.format(
          Locale.ROOT,
          "%.0f steps/s, %.1f sequences and %.1f tokens per step, %.3f ms measured per step,"
              + " model busy %.0f%% of the time",
          steps / seconds,
          sequences / (double) steps,
          tokens / (double) steps,
          measuredNs / 1e6 / steps,
          100.0 * measuredNs / (seconds * 1e9));
    }
  }
}
