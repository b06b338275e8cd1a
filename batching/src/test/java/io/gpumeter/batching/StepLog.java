package io.gpumeter.batching;

import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

/** Records every step's measurement and the sum of its shares. */
final class StepLog implements StepListener {
  record Step(long measuredNs, long sharesSum, int sequences, int tokens, boolean failed) {}

  final List<Step> steps = new CopyOnWriteArrayList<>();

  @Override
  public void onStep(long measuredNs, long[] shares, int sequences, int tokens, boolean failed) {
    long sum = 0;
    for (int i = 0; i < sequences; i++) {
      sum += shares[i];
    }
    steps.add(new Step(measuredNs, sum, sequences, tokens, failed));
  }

  long measured() {
    return steps.stream().mapToLong(Step::measuredNs).sum();
  }
}
