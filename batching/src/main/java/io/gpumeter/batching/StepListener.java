package io.gpumeter.batching;

/**
 * Observes every charged step on the scheduler thread, after its time was split. For audits and
 * tests (conservation: the shares sum to the measurement). Must not block or keep the arrays.
 */
@FunctionalInterface
public interface StepListener {
  StepListener NONE = (measuredNs, shares, sequences, tokens, failed) -> {};

  /**
   * @param measuredNs the step's measured device time
   * @param shares each sequence's share; only {@code [0, sequences)} is valid
   * @param sequences sequences in the step
   * @param tokens tokens processed in the step
   * @param failed whether the model step threw
   */
  void onStep(long measuredNs, long[] shares, int sequences, int tokens, boolean failed);
}
