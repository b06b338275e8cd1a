package io.gpumeter.billing;

import io.gpumeter.metering.UsageRecord;
import java.util.List;

/**
 * Where {@link LedgerWriter} makes batches durable. The JDBC implementation writes PostgreSQL; a
 * durable local outbox (written when the database is down, replayed when it returns) slots in as
 * another implementation wrapping it.
 */
public interface LedgerStore {

  /**
   * Makes {@code records} durable in one transaction: all or none. Idempotent on the request id:
   * a record whose id is already stored (or appears twice in the batch) is stored once and counted
   * once in the rollups.
   *
   * @return how many records were new
   * @throws LedgerWriteException if nothing was stored
   */
  int write(List<UsageRecord> records) throws LedgerWriteException;
}
