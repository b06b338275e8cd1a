package io.gpumeter.billing;

/**
 * When {@link io.gpumeter.billing.ledger.LedgerWriter#publish}'s future completes.
 *
 * <p>{@link #DURABLE} (the default, DESIGN.md invariant 4): once the record is committed to
 * PostgreSQL or fsynced to the local outbox, so a completed future survives a crash of the process
 * or the machine. {@link #FAST}: as soon as the record is in the writer's in-memory queue; it is
 * written the same way afterwards, but a crash (or kill) of the process loses every record still
 * queued (at most {@link LedgerConfig#queueCapacity()}, typically the last few milliseconds of
 * traffic), and so does a later failure of both the database and the outbox; such losses are logged
 * and counted ({@link LedgerStats#failed()}), but no caller is told.
 */
public enum Durability {
  DURABLE,
  FAST
}
