package io.gpumeter.billing;

/**
 * Counters of a {@link LedgerWriter} since it started.
 *
 * @param accepted records accepted by {@code publish}
 * @param rejected records refused by {@code publish} (queue full or closed)
 * @param stored records newly stored
 * @param duplicates records acknowledged as already stored (same request id)
 * @param failed records whose future failed after being accepted
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
