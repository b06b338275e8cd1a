package io.gpumeter.billing.ledger;

import io.github.resilience4j.circuitbreaker.CircuitBreaker;
import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.CommitPoint;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.LedgerHealth;
import io.gpumeter.billing.LedgerStats;
import io.gpumeter.billing.PendingMeasuredTime;
import io.gpumeter.billing.SetAsideReplay;
import io.gpumeter.metering.UsageSink;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.UUID;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The ledger wired together: {@link LedgerWriter} → {@link FailoverLedgerStore} (breaker and retry
 * → {@link JdbcLedgerStore} | {@link Outbox}) and the {@link OutboxReplayer}. Opening it locks the
 * outbox directory (one process per outbox) and starts the replayer, whose first pass replays a
 * backlog left by a crash. Close it once: the writer drains first, then the replayer and the outbox
 * stop.
 *
 * <p>With {@link CommitPoint#LOCAL} the chain is {@link LedgerWriter} → {@link FailoverLedgerStore}
 * → {@link LocalCommitLedgerStore} (the {@link CommitLog} in {@code commit-log} beside the outbox,
 * shipped to {@link JdbcLedgerStore}) | {@link Outbox}: the log is the durable store, and while
 * PostgreSQL is down it keeps the charges itself (the breaker does not open: the log answers), up
 * to {@link LedgerConfig#commitLogMaxBytes()}, after which new charges are refused (503). The
 * outbox is kept only as the fallback for a log whose disk refuses writes (the breaker opens on
 * those) and for the measured time's owner id; a record the database refuses at shipping stays in
 * the log (logged), it is not dead-lettered.
 */
public final class Ledger implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(Ledger.class);

  private final Outbox outbox;
  private final FailoverLedgerStore store;
  private final OutboxReplayer replayer;
  private final LedgerWriter writer;
  private final LocalCommitLedgerStore local; // null with commit point POSTGRES

  /** How long {@link #close()} waits for the commit log to be shipped before leaving it. */
  private static final Duration CLOSE_SHIP_WAIT = Duration.ofSeconds(5);

  private Ledger(
      Outbox outbox,
      FailoverLedgerStore store,
      OutboxReplayer replayer,
      LedgerWriter writer,
      LocalCommitLedgerStore local) {
    this.local = local;
    this.outbox = outbox;
    this.store = store;
    this.replayer = replayer;
    this.writer = writer;
  }

  /**
   * Opens the outbox in {@code outboxDirectory}, starts the replayer and the writer.
   *
   * @param dataSource the ledger's own pool (short timeouts, so a dead database fails over fast)
   * @throws IllegalStateException if the outbox directory is in use by another process
   */
  public static Ledger open(DataSource dataSource, Path outboxDirectory, LedgerConfig config) {
    return open(dataSource, outboxDirectory, config, null);
  }

  /**
   * Like {@link #open(DataSource, Path, LedgerConfig)}, and makes {@code measured} time durable
   * with every batch (null: none). This process gets a new instance id; the outbox directory's
   * owner id (created once, kept in the directory) ties it to its predecessors, whose device time
   * handed out but never recorded is settled as unbilled once the outbox was replayed.
   */
  public static Ledger open(
      DataSource dataSource,
      Path outboxDirectory,
      LedgerConfig config,
      PendingMeasuredTime measured) {
    Objects.requireNonNull(dataSource, "dataSource");
    Objects.requireNonNull(config, "config");
    Outbox outbox =
        Outbox.open(outboxDirectory, config.outboxMaxBytes(), config.outboxSegmentBytes());
    OutboxReplayer replayer = null;
    LocalCommitLedgerStore local = null;
    try {
      JdbcLedgerStore jdbc =
          new JdbcLedgerStore(dataSource, JdbcLedgerStore.Method.UNNEST, outbox.ownerId());
      LedgerStore database = jdbc;
      if (config.commitPoint() == CommitPoint.LOCAL) {
        Path dir = commitLogDirectory(outboxDirectory);
        CommitLog commitLog = CommitLog.open(dir, config.commitLogSegmentBytes());
        try {
          local =
              LocalCommitLedgerStore.open(
                  commitLog, jdbc, config.retryBackoff(), config.commitLogMaxBytes());
        } catch (LedgerWriteException e) {
          commitLog.close();
          throw new BillingException(
              "the local commit log in "
                  + dir
                  + " holds charges that could not be shipped to the billing database: "
                  + e.getMessage(),
              e);
        }
        database = local;
      }
      FailoverLedgerStore store =
          measured == null
              ? new FailoverLedgerStore(database, outbox, config)
              : new FailoverLedgerStore(
                  database, outbox, config, measured, outbox.ownerId(), UUID.randomUUID());
      replayer =
          new OutboxReplayer(
                  store, jdbc::ping, measured == null ? null : jdbc::settleEarlierInstances, config)
              .start();
      LedgerWriter writer = new LedgerWriter(store, config);
      LOG.info(
          "Billing ledger: {} mode, commit point {}, outbox {} (max {} bytes, {} bytes waiting)",
          config.durability(),
          config.commitPoint(),
          outboxDirectory,
          config.outboxMaxBytes(),
          outbox.bytes());
      return new Ledger(outbox, store, replayer, writer, local);
    } catch (RuntimeException e) {
      if (replayer != null) {
        replayer.close();
      }
      if (local != null) {
        local.close();
      }
      outbox.close();
      throw e;
    }
  }

  /**
   * This replica's id: the outbox directory's owner id, the same for every process that opens the
   * directory. Stored with every charge and every minute of measured time this ledger writes
   * ({@code usage_records.replica}, {@code device_time_minutely.replica}), so reconciliation can
   * report drift per replica.
   */
  public UUID replicaId() {
    return outbox.ownerId();
  }

  /** The commit log's folder: {@code commit-log} beside the outbox folder. */
  public static Path commitLogDirectory(Path outboxDirectory) {
    return outboxDirectory.toAbsolutePath().resolveSibling("commit-log");
  }

  /** The commit point in use. */
  public CommitPoint commitPoint() {
    return local == null ? CommitPoint.POSTGRES : CommitPoint.LOCAL;
  }

  /**
   * Waits until every charge committed so far to the local commit log is stored in PostgreSQL, at
   * most {@code deadline}; true at once with commit point POSTGRES (a durable charge is in
   * PostgreSQL or the outbox already).
   *
   * @return whether it was shipped in time
   */
  public boolean awaitShipped(Duration deadline) {
    return local == null || local.awaitShipped(deadline);
  }

  /**
   * Waits until every charge acknowledged before this call (committed to the local commit log) is
   * stored in PostgreSQL, at most {@code deadline}; charges committed meanwhile do not delay it.
   * True at once with commit point POSTGRES.
   *
   * @return whether they were shipped in time
   */
  public boolean awaitAcknowledgedShipped(Duration deadline) {
    return local == null || local.awaitShippedThrough(local.committedPosition(), deadline);
  }

  /** The local commit log's size on disk in bytes (0 with POSTGRES). */
  public long commitLogBytes() {
    return local == null ? 0 : local.bytesOnDisk();
  }

  /** Charges committed to the local commit log and not yet in PostgreSQL (0 with POSTGRES). */
  public long unshippedRecords() {
    return local == null ? 0 : local.unshippedRecords();
  }

  /** Where usage records are published; see {@link LedgerWriter#publish}. */
  public UsageSink sink() {
    return writer;
  }

  /**
   * Writes the measured time recorded so far (through the database, or the outbox when it is down).
   * Never throws; what could not be written stays pending.
   */
  public void flushMeasured() {
    store.flushMeasured();
  }

  /**
   * Re-applies the charges set aside (intact records of quarantined outbox segments, dead-letter
   * entries), record by record, idempotently. Blocks on the database; call off event loops.
   *
   * @throws BillingException if the database failed part-way (what was applied stays applied; run
   *     it again)
   */
  public SetAsideReplay replaySetAside() {
    try {
      return toReplay(replayer.replaySetAside());
    } catch (Exception e) {
      throw new BillingException("replay of set-aside charges stopped: " + e.getMessage(), e);
    }
  }

  /**
   * {@link #replaySetAside()} with no ledger running (the {@code replay} command while the server
   * is stopped): opens the outbox in {@code outboxDirectory}, re-applies, closes it.
   *
   * @throws IllegalStateException if a running server holds the outbox (use its admin endpoint)
   * @throws BillingException if the database failed part-way (run it again)
   */
  public static SetAsideReplay replaySetAside(
      DataSource dataSource, Path outboxDirectory, LedgerConfig config) {
    try (Outbox outbox =
        Outbox.open(outboxDirectory, config.outboxMaxBytes(), config.outboxSegmentBytes())) {
      return toReplay(
          OutboxReplayer.replaySetAside(
              outbox,
              new JdbcLedgerStore(dataSource, JdbcLedgerStore.Method.UNNEST, outbox.ownerId())));
    } catch (IllegalStateException e) {
      throw e;
    } catch (Exception e) {
      throw new BillingException("replay of set-aside charges stopped: " + e.getMessage(), e);
    }
  }

  private static SetAsideReplay toReplay(Outbox.SetAsideReport r) {
    return new SetAsideReplay(
        r.applied(),
        r.alreadyPresent(),
        r.refused(),
        r.segmentsCleared(),
        r.segmentsLeft(),
        r.deadLettersLeft());
  }

  /** Cheap (volatile reads, no allocation): can a record handed over now be made durable? */
  public boolean isAccepting() {
    return writer.isAccepting();
  }

  public LedgerStats stats() {
    return writer.stats();
  }

  /**
   * The ledger's readiness with its reason and numbers.
   *
   * @param closedReason why the owner no longer takes work (the ledger is not ready), or null
   * @param databaseProblem why the database did not answer a check made by the caller, or null if
   *     it answered or was not checked; the ledger stays ready (charges go to the outbox) but is
   *     reported degraded
   */
  public LedgerHealth health(String closedReason, String databaseProblem) {
    LedgerConfig lc = writer.config();
    int depth = writer.queueDepth();
    CircuitBreaker.State breakerState = store.breakerState();
    boolean accepting = store.isAccepting();
    String lastError = store.lastError();
    long outboxBytes = outbox.bytes();
    long outboxMaxBytes = outbox.maxBytes();
    boolean breakerOpen = breakerState != CircuitBreaker.State.CLOSED;
    String shipError = local == null ? null : local.shipError();
    if (shipError != null && local.unshippedRecords() == 0) {
      shipError = null; // the failure was of a batch since shipped: nothing waits
    }
    boolean degraded = breakerOpen || databaseProblem != null || shipError != null;
    boolean ready;
    String reason;
    if (closedReason != null) {
      ready = false;
      reason = closedReason;
    } else if (depth >= lc.queueCapacity()) {
      ready = false;
      reason = "the ledger queue is full (" + depth + " records waiting)";
    } else if (!accepting) {
      ready = false;
      reason = store.refusalReason();
    } else if (breakerOpen) {
      ready = true;
      reason =
          "degraded: the billing database is unavailable (circuit breaker "
              + breakerState
              + (lastError != null ? ", " + lastError : "")
              + "); charges go to the outbox ("
              + outboxBytes
              + " of "
              + outboxMaxBytes
              + " bytes used)";
    } else if (shipError != null) {
      ready = true;
      reason =
          "degraded: the billing database is unavailable ("
              + shipError
              + "); charges wait in the local commit log ("
              + local.bytesOnDisk()
              + " of "
              + local.maxBytes()
              + " bytes used, "
              + local.unshippedRecords()
              + " records not shipped)";
    } else if (databaseProblem != null && local != null) {
      ready = true;
      reason =
          "degraded: "
              + databaseProblem
              + "; charges will wait in the local commit log ("
              + local.bytesOnDisk()
              + " of "
              + local.maxBytes()
              + " bytes used) and only cached API keys are accepted";
    } else if (databaseProblem != null) {
      ready = true;
      reason =
          "degraded: "
              + databaseProblem
              + "; charges will go to the outbox ("
              + outboxBytes
              + " of "
              + outboxMaxBytes
              + " bytes used) and only cached API keys are accepted";
    } else if (outboxBytes > 0) {
      ready = true;
      reason = "ok; replaying " + outboxBytes + " bytes from the outbox";
    } else {
      ready = true;
      reason = "ok";
    }
    String databaseReason =
        databaseProblem != null
            ? databaseProblem
            : breakerOpen
                ? "circuit breaker " + breakerState + (lastError != null ? ", " + lastError : "")
                : shipError != null ? "shipping from the local commit log: " + shipError : null;
    return new LedgerHealth(
        ready,
        degraded,
        reason,
        lc.durability(),
        breakerState.name(),
        depth,
        lc.queueCapacity(),
        outboxBytes,
        outboxMaxBytes,
        store.outboxedRecords(),
        replayer.replayedRecords(),
        outbox.corruptFrames() + outbox.tornTails(),
        outbox.deadLetteredRecords(),
        lastError,
        databaseReason == null,
        databaseReason,
        outbox.quarantinedSegments(),
        outbox.quarantinedRecords(),
        outbox.deadLettersWaiting());
  }

  /**
   * Drains the writer (to the database, or to the outbox if it is down), stops the replayer (what
   * is left in the outbox is replayed at the next start), with a local commit point waits up to 5 s
   * for the log to be shipped (what is not stays in it for the next start), and closes the outbox.
   * Each step runs even if an earlier one failed.
   */
  @Override
  public void close() {
    List<Runnable> steps = new ArrayList<>();
    steps.add(writer::close);
    steps.add(store::flushMeasured);
    steps.add(replayer::close);
    if (local != null) {
      steps.add(
          () -> {
            if (!local.awaitShipped(CLOSE_SHIP_WAIT)) {
              LOG.warn(
                  "{} charges left in the local commit log, shipped at the next start",
                  local.unshippedRecords());
            }
            local.close();
          });
    }
    steps.add(outbox::close);
    RuntimeException first = null;
    for (Runnable step : steps) {
      try {
        step.run();
      } catch (RuntimeException e) {
        if (first == null) {
          first = e;
        } else {
          first.addSuppressed(e);
        }
      }
    }
    if (first != null) {
      throw first;
    }
  }
}
