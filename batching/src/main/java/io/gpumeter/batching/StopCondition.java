package io.gpumeter.batching;

/**
 * Decides, token by token, whether a generation has reached one of its stop strings. Called on the
 * scheduler thread right after each generated token is appended (and after the {@link
 * TokenListener} saw it); when it answers true the sequence finishes with {@link FinishReason#STOP}
 * at once, so no step runs past the stop string. The scheduler asks each choice of a request
 * through its own instance, {@link #forChoice}, since an instance may keep the text decoded so far;
 * must not block.
 */
@FunctionalInterface
public interface StopCondition {
  /** Never stops (only end-of-sequence and the length limit end the generation). */
  StopCondition NONE = token -> false;

  /**
   * @param token the token just generated
   * @return true when the text generated so far contains a stop string
   */
  boolean stopsAfter(int token);

  /**
   * The condition for choice {@code index} of the request, called once per choice before its first
   * token. A condition that keeps state returns a fresh instance for each choice, so each stops on
   * its own text; the default, for a stateless one, returns itself.
   */
  default StopCondition forChoice(int index) {
    return this;
  }
}
