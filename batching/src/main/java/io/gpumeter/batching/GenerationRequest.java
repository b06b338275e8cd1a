package io.gpumeter.batching;

import java.util.Objects;

/**
 * One generation to run. Validated here so the scheduler never sees an impossible request.
 *
 * @param requestId unique id, also the ledger key
 * @param apiKeyId calling key (fairness: the scheduler gives each key a turn)
 * @param accountId account of the key
 * @param promptTokens prompt, at least one token
 * @param maxTokens tokens to generate at most, at least 1
 * @param temperature 0 for greedy, else softmax temperature (at most 2)
 * @param seed sampling seed
 * @param timeoutNanos time budget from submission, or 0 for the scheduler's default
 * @param listener receives tokens as they are generated (streaming); may be {@link
 *     TokenListener#NONE}
 * @param stop ends the generation when its text reaches a stop string; may be {@link
 *     StopCondition#NONE}
 */
public record GenerationRequest(
    String requestId,
    long apiKeyId,
    long accountId,
    int[] promptTokens,
    int maxTokens,
    double temperature,
    long seed,
    long timeoutNanos,
    TokenListener listener,
    StopCondition stop) {

  /** A request without stop strings. */
  public GenerationRequest(
      String requestId,
      long apiKeyId,
      long accountId,
      int[] promptTokens,
      int maxTokens,
      double temperature,
      long seed,
      long timeoutNanos,
      TokenListener listener) {
    this(
        requestId,
        apiKeyId,
        accountId,
        promptTokens,
        maxTokens,
        temperature,
        seed,
        timeoutNanos,
        listener,
        StopCondition.NONE);
  }

  public GenerationRequest {
    Objects.requireNonNull(requestId, "requestId");
    Objects.requireNonNull(promptTokens, "promptTokens");
    Objects.requireNonNull(listener, "listener");
    Objects.requireNonNull(stop, "stop");
    if (promptTokens.length == 0) {
      throw new IllegalArgumentException("prompt must have at least one token");
    }
    if (maxTokens < 1) {
      throw new IllegalArgumentException("maxTokens must be >= 1, was " + maxTokens);
    }
    if (!(temperature >= 0 && temperature <= 2)) {
      throw new IllegalArgumentException("temperature must be in [0, 2], was " + temperature);
    }
    if (timeoutNanos < 0) {
      throw new IllegalArgumentException("timeoutNanos must be >= 0, was " + timeoutNanos);
    }
  }
}
