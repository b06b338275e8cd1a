package io.gpumeter.batching;

import io.gpumeter.metering.UsageRecord;
import java.util.concurrent.CompletableFuture;

/**
 * A finished generation, whatever the way it ended: every result carries its usage record.
 *
 * @param tokens generated tokens (end-of-sequence excluded)
 * @param finishReason why it ended
 * @param usage the charge, already handed to the usage sink
 * @param durable completes when the charge is durable (database or outbox)
 * @param error the failure for {@link FinishReason#ERROR}, else null
 * @param choices every choice in index order (one unless the request asked for {@code n > 1});
 *     {@code tokens} and {@code finishReason} are choice 0's, except that a request any of whose
 *     choices failed, timed out or was cancelled ends with that reason
 */
public record GenerationResult(
    int[] tokens,
    FinishReason finishReason,
    UsageRecord usage,
    CompletableFuture<Void> durable,
    Throwable error,
    java.util.List<Choice> choices) {

  /** A result with one choice. */
  public GenerationResult(
      int[] tokens,
      FinishReason finishReason,
      UsageRecord usage,
      CompletableFuture<Void> durable,
      Throwable error) {
    this(
        tokens,
        finishReason,
        usage,
        durable,
        error,
        java.util.List.of(new Choice(0, tokens, finishReason)));
  }
}
