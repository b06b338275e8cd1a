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
 */
public record GenerationResult(
    int[] tokens,
    FinishReason finishReason,
    UsageRecord usage,
    CompletableFuture<Void> durable,
    Throwable error) {}
