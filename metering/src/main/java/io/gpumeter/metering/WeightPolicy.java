package io.gpumeter.metering;

/**
 * How much of a step a sequence is responsible for. The apportioner splits each measured step in
 * proportion to these weights; the policy's {@link #describe()} string is stored on every record so
 * an audit knows which rule produced a charge.
 */
public interface WeightPolicy {

  /**
   * Weight of one sequence in one step.
   *
   * @param prefill true if the tokens are prompt tokens (a prefill chunk), false for a decode step
   * @param tokens tokens the sequence processes in this step (chunk length, or 1 for decode)
   * @param contextTokens positions the sequence attends to after this step (its cache length)
   * @return a non-negative weight
   */
  long weight(boolean prefill, int tokens, int contextTokens);

  /** Stable description of the rule and its parameters, e.g. {@code linear(p=1,d=1,c=0)}. */
  String describe();

  /** The default: tokens processed in the step, prefill and decode alike. */
  static WeightPolicy tokens() {
    return LinearWeightPolicy.TOKENS;
  }
}
