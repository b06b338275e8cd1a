package io.gpumeter.batching;

/** A model's scheduler as the server sees it. */
public interface GenerationService {

  /**
   * Queues a generation. Never blocks.
   *
   * @throws AdmissionRejectedException if the queue is full, the request cannot fit the model's
   *     context, or the scheduler is shutting down
   */
  Generation submit(GenerationRequest request);

  /**
   * Queues a generation whose every step must be allowed by {@code guard} first (budgets: a request
   * whose account ran dry stops at the next step). Never blocks.
   *
   * @throws AdmissionRejectedException as {@link #submit(GenerationRequest)}
   */
  Generation submit(GenerationRequest request, StepGuard guard);

  /** Current figures (queue length, running sequences, last step). */
  SchedulerStats stats();
}
