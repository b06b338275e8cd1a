package io.gpumeter.billing;

/**
 * {@link io.gpumeter.billing.ledger.LedgerWriter#publish} was refused because no charge can be made
 * durable right now: the database is unavailable and the local outbox is full or its disk refuses
 * writes (see {@link LedgerHealth#reason()}). Maps to 503 at the HTTP edge; the server should stop
 * admitting new work while {@link Billing#canAcceptWork()} is false.
 */
public final class LedgerUnavailableException extends RuntimeException {
  public LedgerUnavailableException(String reason) {
    super("usage record not accepted: " + reason);
  }
}
