package io.gpumeter.batching;

import java.util.concurrent.CompletableFuture;

/** Handle on a submitted generation. */
public interface Generation {
  String requestId();

  /**
   * Completes when the generation leaves the scheduler, normally or not. It never completes
   * exceptionally once admitted: failures come back as {@link FinishReason#ERROR} with usage.
   */
  CompletableFuture<GenerationResult> result();

  /**
   * Asks the scheduler to stop this generation at the next step (client went away). Its record
   * keeps every step it took part in, with status {@code cancelled}. Idempotent.
   */
  void cancel();
}
