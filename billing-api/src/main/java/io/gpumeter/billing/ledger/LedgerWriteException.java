package io.gpumeter.billing.ledger;

/** A {@link LedgerStore} could not store a batch; nothing of it was stored. */
public final class LedgerWriteException extends Exception {
  private final boolean recordError;

  /**
   * @param recordError true when a record itself was refused (a constraint or data error), so
   *     retrying the same batch cannot succeed; false for failures of the store (connection lost,
   *     timeout, deadlock), after which the same batch may succeed later
   */
  public LedgerWriteException(String message, Throwable cause, boolean recordError) {
    super(message, cause);
    this.recordError = recordError;
  }

  public boolean isRecordError() {
    return recordError;
  }
}
