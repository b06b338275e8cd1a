package io.gpumeter.batching;

/** The scheduler would not take a request. The server maps {@link Reason} to 429 or 503. */
public final class AdmissionRejectedException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  /** Why admission failed. */
  public enum Reason {
    /** The admission queue is full: retry later (429). */
    QUEUE_FULL,
    /** The prompt plus max_tokens cannot fit the model's context (400). */
    TOO_LONG,
    /** The scheduler is stopping or stopped (503). */
    SHUTTING_DOWN
  }

  private final Reason reason;

  public AdmissionRejectedException(Reason reason, String message) {
    super(message, null, false, false);
    this.reason = reason;
  }

  public Reason reason() {
    return reason;
  }
}
