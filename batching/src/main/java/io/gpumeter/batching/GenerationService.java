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

  /** Current figures (queue length, running sequences, last step). */
  SchedulerStats stats();
}
