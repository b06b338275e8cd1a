package io.gpumeter.billing;

/**
 * Counters of a {@link io.gpumeter.billing.ledger.LedgerWriter} since it started.
 *
 * @param accepted records accepted by {@code publish}
 * @param rejected records refused by {@code publish} (queue full, ledger unavailable, closed)
 * @param stored records newly stored (records written to the outbox count here: whether they are
 *     duplicates is only known on replay)
 * @param duplicates records acknowledged as already stored (same request id)
 * @param failed records whose write failed after being accepted (in FAST mode: lost)
 * @param batches transactions committed
 * @param queued records waiting now
 */
public record LedgerStats(
    long accepted,
    long rejected,
    long stored,
    long duplicates,
    long failed,
    long batches,
    int queued) {}
