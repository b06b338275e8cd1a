package io.gpumeter.billing.ledger;

import io.github.resilience4j.circuitbreaker.CallNotPermittedException;
import io.github.resilience4j.circuitbreaker.CircuitBreaker;
import io.github.resilience4j.circuitbreaker.CircuitBreakerConfig;
import io.github.resilience4j.core.IntervalFunction;
import io.github.resilience4j.retry.Retry;
import io.github.resilience4j.retry.RetryConfig;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.MeasuredDelta;
import io.gpumeter.billing.PendingMeasuredTime;
import io.gpumeter.metering.UsageRecord;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.LongAdder;
import java.util.concurrent.locks.ReentrantLock;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The ledger's store when PostgreSQL may fail: the database behind a circuit breaker and a retry,
 * and a durable local {@link Outbox} for whatever the database cannot take; {@link OutboxReplayer}
 * puts the outbox back into the database when it returns.
 *
 * <pre>
 * write(batch) ─ breaker CLOSED? ─yes─> Retry(CircuitBreaker(database.write)) ──ok──> committed
 *                      │                         │ record error: thrown as is (never retried,
 *                      │ no (OPEN, HALF_OPEN)    │ never outboxed; LedgerWriter splits the batch)
 *                      ▼                         ▼ other failure, or breaker opened meanwhile
 *                 outbox.append(batch) ──fsync──> durable ── replayer (one thread, every
 *                      │ refused (full, disk error)          replayInterval) ──> database.write
 *                      ▼
 *                 LedgerWriteException: not durable
 * </pre>
 *
 * <p>Write path: one caller at a time in practice (LedgerWriter's thread), but safe for several.
 * Only transient failures are retried ({@link TransientErrors}), with exponential backoff, a few
 * times; every attempt is a call of the breaker (count-based window), which opens when enough of
 * them failed. Record errors count as successes of the breaker: the database answered. While the
 * breaker is not CLOSED, batches go straight to the outbox, so the writer never stalls on a dead
 * database for more than the first batch's attempts.
 *
 * <p>The backlog is put back into the database by {@link OutboxReplayer}, which shares this store's
 * circuit breaker.
 *
 * <p>Availability ({@link #isAccepting()}): new records can be made durable unless the breaker is
 * not CLOSED and the outbox is full, or refused its last append, or its disk failed; or the
 * database store itself refuses ({@link LedgerStore#isAccepting()}: the local commit log at its
 * bound, with {@code ledger.commit_point=local}).
 */
public final class FailoverLedgerStore implements LedgerStore {
  private static final Logger LOG = LoggerFactory.getLogger(FailoverLedgerStore.class);

  private final LedgerStore database;
  private final Outbox outbox;
  private final LedgerConfig config;
  private final CircuitBreaker breaker;
  private final Retry retry;
  private final LongAdder outboxed = new LongAdder();
  private volatile boolean outboxRefused;
  private volatile boolean inOutboxMode;
  private volatile String lastError;

  /** Measured time to make durable with each batch; null when nothing is measured. */
  private final PendingMeasuredTime pending;

  private final UUID ownerId;
  private final UUID instanceId;

  /**
   * Held from taking the measured deltas to the end of their batch's write, so batches commit (or
   * are fsynced) in the order their deltas were taken: whenever a usage record is durable, the
   * steps it was charged for are too (they were recorded before it was published).
   */
  private final ReentrantLock measuredLock = new ReentrantLock();

  /** Records dead-lettered on the direct path whose device time the next batch reports. */
  private final List<UsageRecord> carried = new ArrayList<>();

  /** A store that keeps no measured time. */
  public FailoverLedgerStore(LedgerStore database, Outbox outbox, LedgerConfig config) {
    this(database, outbox, config, null, null, null);
  }

  /**
   * A store that makes {@code pending} measured time durable with every batch (same transaction, or
   * the same outbox group), as {@link MeasuredBatch}es of process {@code instanceId} of the outbox
   * owner {@code ownerId}. Null {@code pending} keeps no measured time.
   */
  public FailoverLedgerStore(
      LedgerStore database,
      Outbox outbox,
      LedgerConfig config,
      PendingMeasuredTime pending,
      UUID ownerId,
      UUID instanceId) {
    this.pending = pending;
    this.ownerId = pending == null ? null : Objects.requireNonNull(ownerId, "ownerId");
    this.instanceId = pending == null ? null : Objects.requireNonNull(instanceId, "instanceId");
    this.database = Objects.requireNonNull(database, "database");
    this.outbox = Objects.requireNonNull(outbox, "outbox");
    this.config = Objects.requireNonNull(config, "config");
    this.breaker =
        CircuitBreaker.of(
            "gpumeter-ledger",
            CircuitBreakerConfig.custom()
                .slidingWindowType(CircuitBreakerConfig.SlidingWindowType.COUNT_BASED)
                .slidingWindowSize(config.breakerWindow())
                .minimumNumberOfCalls(config.breakerMinimumCalls())
                .failureRateThreshold(config.breakerFailureRate())
                .waitDurationInOpenState(config.breakerOpenWait())
                .permittedNumberOfCallsInHalfOpenState(1)
                .recordException(e -> !(e instanceof LedgerWriteException w && w.isRecordError()))
                .writableStackTraceEnabled(false)
                .build());
    this.breaker.getEventPublisher().onStateTransition(e -> logTransition(e.getStateTransition()));
    this.retry =
        Retry.of(
            "gpumeter-ledger",
            RetryConfig.custom()
                .maxAttempts(config.retryAttempts())
                .intervalFunction(
                    IntervalFunction.ofExponentialBackoff(config.retryBackoff().toMillis(), 2.0))
                .retryOnException(TransientErrors::isTransient)
                .failAfterMaxAttempts(false)
                .writableStackTraceEnabled(false)
                .build());
  }

  /** An outage logs once when it starts and once when it ends, not at every failed probe. */
  private void logTransition(CircuitBreaker.StateTransition t) {
    if (t == CircuitBreaker.StateTransition.CLOSED_TO_OPEN) {
      LOG.warn(
          "Ledger database circuit breaker opened; charges go to the outbox in {}",
          outbox.directory());
    } else if (t.getToState() == CircuitBreaker.State.CLOSED) {
      LOG.info("Ledger database circuit breaker closed: the database answers again");
    } else {
      LOG.debug("Ledger database circuit breaker: {}", t);
    }
  }

  /**
   * Writes {@code records} with the measured time pending now (see the class comment). A single
   * record that the database refuses (a constraint or data error) is set aside in the outbox's
   * durable dead-letter store and counted as written (its charge is kept, for {@code replay}); a
   * batch of several with a record error throws, so that the writer retries them one by one. With
   * measured time, an empty {@code records} still writes the pending measured time.
   */
  @Override
  public int write(List<UsageRecord> records) throws LedgerWriteException {
    if (pending == null) {
      if (records.isEmpty()) {
        return 0;
      }
      try {
        return writeBatch(records, null);
      } catch (LedgerWriteException e) {
        setAside(records, e);
        return 0;
      }
    }
    measuredLock.lock();
    try {
      List<MeasuredDelta> deltas = pending.take();
      List<UsageRecord> carriedNow;
      synchronized (carried) {
        carriedNow = new ArrayList<>(carried);
        carried.clear();
      }
      List<UsageRecord> accounted = records;
      if (!carriedNow.isEmpty()) {
        accounted = new ArrayList<>(records);
        accounted.addAll(carriedNow);
      }
      MeasuredBatch batch = MeasuredBatch.of(ownerId, instanceId, deltas, accounted);
      if (batch == null) {
        return 0;
      }
      boolean done = false;
      try {
        int n;
        try {
          n = writeBatch(records, batch);
        } catch (LedgerWriteException e) {
          // the transaction, measured side included, was rolled back: the deltas go back (finally)
          // and the set-aside record's device time is reported with the next batch
          UsageRecord r = setAside(records, e);
          synchronized (carried) {
            carried.add(r);
          }
          return 0;
        }
        done = true;
        return n;
      } finally {
        if (!done) {
          pending.putBack(deltas);
          synchronized (carried) {
            carried.addAll(carriedNow);
          }
        }
      }
    } finally {
      measuredLock.unlock();
    }
  }

  /**
   * Writes the measured time pending now, without records (measured time reaches the database
   * within this call's interval even when no request finishes). Never throws: on failure the deltas
   * stay pending for the next batch.
   */
  public void flushMeasured() {
    if (pending == null) {
      return;
    }
    try {
      write(List.of());
    } catch (LedgerWriteException | RuntimeException e) {
      LOG.warn("Measured device time not written yet (kept for the next batch): {}", e.toString());
    }
  }

  /**
   * A single record refused by the database (record error) goes to the durable dead-letter store;
   * anything else (a batch of several, a failure of the store, a dead-letter write that failed) is
   * rethrown.
   *
   * @return the record set aside
   */
  private UsageRecord setAside(List<UsageRecord> records, LedgerWriteException e)
      throws LedgerWriteException {
    if (!e.isRecordError() || records.size() != 1) {
      throw e;
    }
    UsageRecord r = records.get(0);
    try {
      outbox.deadLetter(r, "refused on the direct path: " + describe(e));
    } catch (RuntimeException d) {
      e.addSuppressed(d);
      throw e;
    }
    return r;
  }

  private int writeBatch(List<UsageRecord> records, MeasuredBatch batch)
      throws LedgerWriteException {
    String why;
    if (breaker.getState() == CircuitBreaker.State.CLOSED) {
      try {
        int inserted =
            Retry.decorateCheckedSupplier(
                    retry, breaker.decorateCheckedSupplier(() -> database.write(records, batch)))
                .get();
        if (inOutboxMode) {
          inOutboxMode = false;
          LOG.info("Ledger writes reach the database again");
        }
        return inserted;
      } catch (LedgerWriteException e) {
        if (e.isRecordError()) {
          throw e;
        }
        why = describe(e);
      } catch (CallNotPermittedException e) {
        why = "circuit breaker " + breaker.getState();
      } catch (Error e) {
        throw e;
      } catch (Throwable t) {
        why = describe(t);
      }
      lastError = "database: " + why;
    } else {
      why = "circuit breaker " + breaker.getState();
    }
    return toOutbox(records, batch, why);
  }

  private int toOutbox(List<UsageRecord> records, MeasuredBatch batch, String why)
      throws LedgerWriteException {
    CompletableFuture<Void> appended = outbox.append(records, batch);
    try {
      appended.get(config.outboxAppendTimeout().toMillis(), TimeUnit.MILLISECONDS);
    } catch (ExecutionException | TimeoutException e) {
      Throwable cause = e instanceof ExecutionException ? e.getCause() : e;
      outboxRefused = true;
      lastError = "outbox: " + cause.getMessage();
      throw new LedgerWriteException(
          "usage records not durable: the database is unavailable ("
              + why
              + ") and the outbox refused them ("
              + cause.getMessage()
              + ")",
          cause,
          false);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new LedgerWriteException(
          "interrupted while waiting for the outbox; the records may or may not be durable",
          e,
          false);
    }
    outboxRefused = false;
    outboxed.add(records.size());
    if (!inOutboxMode) {
      inOutboxMode = true;
      LOG.warn(
          "Ledger database unavailable ({}); usage records go to the outbox in {}",
          why,
          outbox.directory());
    }
    // Duplicates are only known on replay; for the writer every record is made durable as new.
    return records.size();
  }

  static String describe(Throwable t) {
    Throwable root = t;
    while (root.getCause() != null && root.getCause() != root) {
      root = root.getCause();
    }
    String m = t.getMessage();
    String text =
        root == t || root.getMessage() == null ? String.valueOf(m) : m + ": " + root.getMessage();
    String state = JdbcLedgerStore.sqlState(t);
    return state == null || text.contains(state) ? text : text + " (SQLState " + state + ")";
  }

  /** Passes the writer's hand-over on to the database store (the local commit log ships then). */
  @Override
  public void acknowledged() {
    database.acknowledged();
  }

  /** Cheap (volatile reads): can a record handed over now be made durable? */
  @Override
  public boolean isAccepting() {
    // a store that bounds itself (the local commit log) refuses before it is full
    return database.isAccepting()
        && (breaker.getState() == CircuitBreaker.State.CLOSED || !outboxRefusing());
  }

  private boolean outboxRefusing() {
    return outboxRefused
        || outbox.bytes() >= outbox.maxBytes()
        || outbox.lastWriteFailure() != null;
  }

  @Override
  public String refusalReason() {
    if (isAccepting()) {
      return null;
    }
    if (!database.isAccepting()) {
      return database.refusalReason();
    }
    String disk = outbox.lastWriteFailure();
    return "the billing database is unavailable (circuit breaker "
        + breaker.getState()
        + (lastError != null ? ", " + lastError : "")
        + ") and the outbox "
        + (disk != null
            ? "disk refused a write (" + disk + ")"
            : "is full (" + outbox.bytes() + " of " + outbox.maxBytes() + " bytes)");
  }

  /** Records written to the outbox since start. */
  public long outboxedRecords() {
    return outboxed.sum();
  }

  /** The last database or outbox failure, or null. */
  public String lastError() {
    return lastError;
  }

  public CircuitBreaker.State breakerState() {
    return breaker.getState();
  }

  public Outbox outbox() {
    return outbox;
  }

  /** The outbox owner and this process, or null when no measured time is kept. */
  UUID ownerId() {
    return ownerId;
  }

  UUID instanceId() {
    return instanceId;
  }

  /** The database store behind the breaker, for the replayer. */
  LedgerStore database() {
    return database;
  }

  CircuitBreaker breaker() {
    return breaker;
  }

  void databaseFailed(Throwable e) {
    lastError = "database: " + describe(e);
  }

  /** The replayer emptied at least one segment: the outbox has room again. */
  void outboxDrained() {
    outboxRefused = false;
  }
}
