package io.gpumeter.billing;

/**
 * Whether the ledger can take new charges, and why not. Returned by {@link Billing#health()}.
 *
 * <p>{@code ready} is false, and the server should refuse new work (503 on completions and on
 * {@code /readyz}), when a finished request's charge could not be made durable: the writer's queue
 * is full, or the database path is down (circuit breaker not closed) and the outbox is full or its
 * disk refused the last write, or the ledger is closed. With the database down but room in the
 * outbox the ledger is ready but {@code degraded}: charges go to the outbox and are replayed when
 * the database returns.
 *
 * @param ready new work may be admitted
 * @param degraded the database path is down and charges are going to the outbox
 * @param reason {@code "ok"}, or why the ledger is degraded or not ready, for logs and /readyz
 * @param durability when publish futures complete
 * @param breakerState the database circuit breaker: {@code CLOSED}, {@code OPEN} or {@code
 *     HALF_OPEN}
 * @param queueDepth records waiting for the writer
 * @param queueCapacity most records that may wait
 * @param outboxBytes bytes of records in the outbox, waiting to be replayed (the replay backlog)
 * @param outboxMaxBytes the outbox's size limit
 * @param outboxedRecords records written to the outbox since start
 * @param replayedRecords records replayed from the outbox into the database since start
 * @param damagedFrames corrupt frames and torn tails met during replay since start (their segments
 *     are in {@code quarantine/})
 * @param deadLetteredRecords records the database refused on replay, set aside in {@code
 *     dead-letter.log}
 * @param lastError the last database or outbox failure, or null
 * @param databaseReachable the billing database answers: the circuit breaker is closed and, when
 *     the caller asked for a check ({@link Billing#health(java.time.Duration)}), it answered it
 * @param databaseProblem why the database is not reachable, or null when it is
 * @param quarantinedSegments damaged outbox segments waiting in {@code quarantine/} (counted from
 *     disk at start, so it survives restarts; {@code replay} re-applies their intact records)
 * @param quarantinedRecords intact records in those segments
 * @param deadLettersWaiting records waiting in {@code dead-letter.log} (counted from disk at start)
 */
public record LedgerHealth(
    boolean ready,
    boolean degraded,
    String reason,
    Durability durability,
    String breakerState,
    int queueDepth,
    int queueCapacity,
    long outboxBytes,
    long outboxMaxBytes,
    long outboxedRecords,
    long replayedRecords,
    long damagedFrames,
    long deadLetteredRecords,
    String lastError,
    boolean databaseReachable,
    String databaseProblem,
    long quarantinedSegments,
    long quarantinedRecords,
    long deadLettersWaiting) {

  /** Charges set aside and waiting for {@code replay}: quarantined records plus dead letters. */
  public long setAsideRecords() {
    return quarantinedRecords + deadLettersWaiting;
  }
}
