package io.gpumeter.billing;

/**
 * A request refused before any work because its account cannot pay for it; the server answers 429
 * {@code insufficient_quota} with {@link #getMessage()}.
 */
public final class InsufficientQuotaException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  /** What ran out. */
  public enum Reason {
    /** The account is suspended. */
    SUSPENDED,
    /** Allowance and credits (and postpaid, not allowed) cannot cover the estimate. */
    EXHAUSTED
  }

  private final Reason reason;

  public InsufficientQuotaException(Reason reason, String message) {
    super(message, null, false, false);
    this.reason = reason;
  }

  public Reason reason() {
    return reason;
  }
}
