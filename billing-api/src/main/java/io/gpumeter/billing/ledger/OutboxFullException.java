package io.gpumeter.billing.ledger;

/** The outbox cannot take more records: it reached its size limit or the disk refused a write. */
final class OutboxFullException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  OutboxFullException(String message) {
    super(message);
  }

  OutboxFullException(String message, Throwable cause) {
    super(message, cause);
  }
}
