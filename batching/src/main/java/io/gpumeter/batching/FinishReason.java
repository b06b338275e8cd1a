package io.gpumeter.batching;

/** Why a generation ended; {@code STOP} and {@code LENGTH} are OpenAI's finish reasons. */
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
  ERROR;

  public String openAiName() {
    return name().toLowerCase(java.util.Locale.ROOT);
  }
}
