package io.gpumeter.batching;

/**
 * Decides, token by token, whether a generation has reached one of its stop strings. Called on the
 * scheduler thread right after each generated token is appended (and after the {@link
 * TokenListener} saw it); when it answers true the sequence finishes with {@link FinishReason#STOP}
 * at once, so no step runs past the stop string. One instance per request (it may keep the text
 * decoded so far); must not block.
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
}
