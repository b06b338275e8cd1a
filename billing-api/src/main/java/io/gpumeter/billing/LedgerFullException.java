package io.gpumeter.billing;

/**
 * {@link io.gpumeter.billing.ledger.LedgerWriter#publish} was refused because the writer's queue is
 * full (the database is slower than the traffic, or down). Maps to 503 at the HTTP edge.
 */
public final class LedgerFullException extends RuntimeException {
  public LedgerFullException(int capacity) {
    super(
        "ledger queue is full ("
            + capacity
            + " records waiting); the usage record was not accepted");
  }
}
