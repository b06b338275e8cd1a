package io.gpumeter.batching;

/**
 * A replica of a model failed (a model step threw: a model error or a lost device) and was taken
 * out of rotation: the error of every request that was on it then. Each such request is charged for
 * the steps it ran, no more; the model's other replicas keep serving.
 */
public final class ReplicaFailedException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  private final String device;

  public ReplicaFailedException(String message, String device) {
    super(message);
    this.device = device;
  }

  /** The label of the failed replica's device ({@code cuda:N}, {@code cpu:N}). */
  public String device() {
    return device;
  }
}
