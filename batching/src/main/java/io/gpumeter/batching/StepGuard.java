package io.gpumeter.batching;

/**
 * Asked by the scheduler before every step a running request takes part in: may it run one more
 * step? The server implements it with the account's budget reservation (batching knows nothing of
 * money); when it answers false the request finishes at once with {@link
 * FinishReason#INSUFFICIENT_QUOTA}, keeps what it generated and is charged for the steps it ran.
 *
 * <p>Called on the scheduler thread, once per running request per step (with {@code n > 1}, once
 * per running choice, each time with the whole request's figures); must not block.
 */
@FunctionalInterface
public interface StepGuard {
  /** Never stops a request. */
  StepGuard NONE = (usedNs, nextStepNs) -> true;

  /**
   * @param usedNs device time charged to the request so far (every choice, prefill included)
   * @param nextStepNs an estimate of the next step's charge: the request's share of its last step
   *     (0 before its first)
   * @return false to stop the request before the next step
   */
  boolean mayStep(long usedNs, long nextStepNs);
}
