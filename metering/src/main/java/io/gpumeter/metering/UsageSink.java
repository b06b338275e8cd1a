package io.gpumeter.metering;

import java.util.concurrent.CompletableFuture;

/**
 * Where finished requests' usage records go (the ledger). Implementations must be safe to call from
 * the scheduler thread: they may not block it.
 */
public interface UsageSink {

  /**
   * Hands a record over. The returned future completes when the record is durable (committed to the
   * database or to the local outbox), or exceptionally if it could not be made durable. The sink is
   * idempotent on {@link UsageRecord#requestId()}.
   */
  CompletableFuture<Void> publish(UsageRecord record);
}
