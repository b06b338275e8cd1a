package io.gpumeter.billing.outbox;

/** The outbox cannot take more records: it reached its size limit or the disk refused a write. */
public final class OutboxFullException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  public OutboxFullException(String message) {
    super(message);
  }

  public OutboxFullException(String message, Throwable cause) {
    super(message, cause);
  }
}
