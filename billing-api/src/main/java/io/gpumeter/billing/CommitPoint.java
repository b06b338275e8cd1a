package io.gpumeter.billing;

/**
 * Where a {@link Durability#DURABLE} charge is durable when its request is answered.
 *
 * <p>{@link #POSTGRES} (the default): committed to PostgreSQL, or fsynced to the outbox while it is
 * down. {@link #LOCAL}: fsynced to the local commit log ({@code ledger.CommitLog}, beside the
 * outbox), from which a shipper thread writes it to PostgreSQL in commit order; while PostgreSQL is
 * down the log grows, up to {@link LedgerConfig#commitLogMaxBytes()}, after which new charges are
 * refused (503). The outbox then only takes what the log's disk refuses. Losing the application
 * host's disk loses the charges not yet shipped (docs/DESIGN.md, "Durability and the commit
 * point").
 */
public enum CommitPoint {
  POSTGRES,
  LOCAL
}
