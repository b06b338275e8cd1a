package io.gpumeter.billing;

/** A billing database operation failed (connection, SQL or start-up error). Unchecked. */
public class BillingException extends RuntimeException {
  public BillingException(String message, Throwable cause) {
    super(message, cause);
  }

  public BillingException(String message) {
    super(message);
  }
}
