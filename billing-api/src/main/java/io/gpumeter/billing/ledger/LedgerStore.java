package io.gpumeter.billing.ledger;

import io.gpumeter.metering.UsageRecord;
import java.util.List;

/**
 * Where {@link LedgerWriter} makes batches durable. The JDBC implementation writes PostgreSQL;
 * {@code internal.FailoverLedgerStore} wraps it with a circuit breaker, retries and the durable
 * local outbox.
 */
public interface LedgerStore {

  /**
   * Makes {@code records} durable in one transaction: all or none. Idempotent on the request id: a
   * record whose id is already stored (or appears twice in the batch) is stored once and counted
   * once in the rollups.
   *
   * @return how many records were new (a store that cannot tell yet, like the outbox, counts all)
   * @throws LedgerWriteException if nothing was stored
   */
  int write(List<UsageRecord> records) throws LedgerWriteException;

  /**
   * Like {@link #write(List)}, and in the same transaction (or the same fsynced outbox group) the
   * measured side of the batch, added once per {@link MeasuredBatch#batchId()}. {@code measured}
   * may be null (nothing measured).
   *
   * @throws LedgerWriteException if nothing was stored
   * @throws UnsupportedOperationException if this store cannot keep measured time and {@code
   *     measured} is not null
   */
  default int write(List<UsageRecord> records, MeasuredBatch measured) throws LedgerWriteException {
    if (measured != null) {
      throw new UnsupportedOperationException(
          getClass().getSimpleName() + " cannot store measured time");
    }
    return write(records);
  }

  /**
   * Whether a record handed over now can be made durable. Called on every publish: must be cheap
   * and must not block.
   */
  default boolean isAccepting() {
    return true;
  }

  /**
   * Called by {@link LedgerWriter} on its thread after it completed the futures of a batch that
   * {@link #write} made durable, so that the answers waiting for them are handed over first. A
   * store that defers work of its own past the commit starts it here rather than in {@code write}:
   * the local commit log's shipping to PostgreSQL ({@link LocalCommitLedgerStore}), which would
   * otherwise compete with the answers for the CPU. Must not block and must not throw. A store must
   * still make progress when this is never called (other callers of {@code write}), only later.
   */
  default void acknowledged() {}

  /** Why {@link #isAccepting()} is false, or null when it is true. */
  default String refusalReason() {
    return null;
  }
}
