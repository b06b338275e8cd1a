package io.gpumeter.billing;

/**
 * A reconciliation report was not computed because charges committed to the local commit log
 * ({@code ledger.commit_point=local}) were not all shipped to PostgreSQL within the wait: a report
 * then would count shipping lag as drift. Maps to 503 with this message at the HTTP edge; retry.
 */
public final class ShippingLagException extends BillingException {
  public ShippingLagException(String message) {
    super(message, null);
  }
}
