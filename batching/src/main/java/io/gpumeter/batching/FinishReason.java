package io.gpumeter.batching;

/**
 * Why a generation ended; {@code STOP} and {@code LENGTH} are OpenAI's finish reasons, {@code
 * INSUFFICIENT_QUOTA} is gpumeter's (OpenAI clients accept finish reasons they do not know).
 */
public enum FinishReason {
  /**
   * The model produced end-of-sequence, or the text reached a stop string ({@link StopCondition}).
   */
  STOP,
  /** {@code max_tokens} or the context length was reached. */
  LENGTH,
  CANCELLED,
  TIMEOUT,
  /** A step failed; see {@link GenerationResult#error()}. */
  ERROR,
  /**
   * The request's {@link StepGuard} refused the next step: its account ran out of funds while it
   * ran. What it generated is returned and charged, like a finished answer.
   */
  INSUFFICIENT_QUOTA;

  public String openAiName() {
    return name().toLowerCase(java.util.Locale.ROOT);
  }
}
