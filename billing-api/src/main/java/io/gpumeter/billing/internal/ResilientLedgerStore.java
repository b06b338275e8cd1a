package io.gpumeter.billing.internal;

import io.github.resilience4j.circuitbreaker.CallNotPermittedException;
import io.github.resilience4j.circuitbreaker.CircuitBreaker;
import io.github.resilience4j.circuitbreaker.CircuitBreakerConfig;
import io.github.resilience4j.core.IntervalFunction;
import io.github.resilience4j.retry.Retry;
import io.github.resilience4j.retry.RetryConfig;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.LedgerStore;
import io.gpumeter.billing.LedgerWriteException;
import io.gpumeter.billing.outbox.Outbox;
import io.gpumeter.metering.UsageRecord;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.LongAdder;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The ledger's store when PostgreSQL may fail: the database behind a circuit breaker and a retry,
 * and a durable local {@link Outbox} for whatever the database cannot take; a replayer puts the
 * outbox back into the database when it returns.
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
 * <p>Replayer: a single thread. When the breaker is OPEN it waits for the breaker's open
 * duration, then probes ({@code SELECT 1}) with the half-open permit; a success closes the
 * breaker. With the breaker CLOSED it replays the outbox in order, {@link
 * LedgerConfig#replayChunk()} records per transaction through the same idempotent {@link
 * LedgerStore} (claims by request id; rollups only from inserted rows), so a record replayed twice
 * (a crash between commit and segment deletion) is stored and counted once. A chunk refused for a
 * record error is written record by record; a record the database refuses alone is set aside in
 * the outbox's dead-letter file so it cannot block the backlog. The writer keeps writing new
 * batches directly while the backlog drains: order does not matter to an idempotent ledger whose
 * rollups are sums.
 *
 * <p>Availability ({@link #isAccepting()}): new records can be made durable unless the breaker is
 * not CLOSED and the outbox is full, or refused its last append, or its disk failed.
 */
public final class ResilientLedgerStore implements LedgerStore, AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(ResilientLedgerStore.class);

  /** Checks that the database answers. */
  @FunctionalInterface
  public interface Probe {
    void ping() throws Exception;
  }

  /** A point-in-time view for health reports. */
  public record Status(
      CircuitBreaker.State breakerState,
      boolean accepting,
      String refusalReason,
      long outboxBytes,
      long outboxMaxBytes,
      long outboxedRecords,
      long replayedRecords,
      long damagedFrames,
      long deadLetteredRecords,
      String lastError) {}

  private final LedgerStore database;
  private final Probe probe;
  private final Outbox outbox;
  private final LedgerConfig config;
  private final CircuitBreaker breaker;
  private final Retry retry;
  private final ScheduledExecutorService replayer;
  private final LongAdder outboxed = new LongAdder();
  private final LongAdder replayed = new LongAdder();
  private volatile boolean outboxRefused;
  private volatile boolean inOutboxMode;
  private volatile boolean stopping;
  private volatile String lastError;

  /** Thrown inside a replay to stop it without blaming the database. */
  private static final class ReplayDeferred extends Exception {
    ReplayDeferred(String why) {
      super(why, null, false, false);
    }
  }

  public ResilientLedgerStore(
      LedgerStore database, Probe probe, Outbox outbox, LedgerConfig config) {
    this.database = Objects.requireNonNull(database, "database");
    this.probe = Objects.requireNonNull(probe, "probe");
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
    this.replayer =
        Executors.newSingleThreadScheduledExecutor(
            r -> {
              Thread t = new Thread(r, "gpumeter-outbox-replayer");
              t.setDaemon(true);
              return t;
            });
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

  /** Starts the replayer; its first pass runs at once (a backlog left by a crash is replayed). */
  public ResilientLedgerStore start() {
    long interval = config.replayInterval().toMillis();
    replayer.scheduleWithFixedDelay(this::replayTick, 0, interval, TimeUnit.MILLISECONDS);
    return this;
  }

  @Override
  public int write(List<UsageRecord> records) throws LedgerWriteException {
    if (records.isEmpty()) {
      return 0;
    }
    String why;
    if (breaker.getState() == CircuitBreaker.State.CLOSED) {
      try {
        int inserted =
            Retry.decorateCheckedSupplier(
                    retry, breaker.decorateCheckedSupplier(() -> database.write(records)))
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
    return toOutbox(records, why);
  }

  private int toOutbox(List<UsageRecord> records, String why) throws LedgerWriteException {
    CompletableFuture<Void> appended = outbox.append(records);
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
          "interrupted while waiting for the outbox; the records may or may not be durable", e,
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

  private static String describe(Throwable t) {
    Throwable root = t;
    while (root.getCause() != null && root.getCause() != root) {
      root = root.getCause();
    }
    String m = t.getMessage();
    String text = root == t || root.getMessage() == null ? String.valueOf(m) : m + ": "
        + root.getMessage();
    String state = JdbcLedgerStore.sqlState(t);
    return state == null || text.contains(state) ? text : text + " (SQLState " + state + ")";
  }

  /** Cheap (volatile reads): can a record handed over now be made durable? */
  @Override
  public boolean isAccepting() {
    return breaker.getState() == CircuitBreaker.State.CLOSED || !outboxRefusing();
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
    String disk = outbox.lastWriteFailure();
    return "the billing database is unavailable (circuit breaker "
        + breaker.getState()
        + (lastError != null ? ", " + lastError : "")
        + ") and the outbox "
        + (disk != null
            ? "disk refused a write (" + disk + ")"
            : "is full (" + outbox.bytes() + " of " + outbox.maxBytes() + " bytes)");
  }

  public Status status() {
    boolean accepting = isAccepting();
    return new Status(
        breaker.getState(),
        accepting,
        accepting ? null : refusalReason(),
        outbox.bytes(),
        outbox.maxBytes(),
        outboxed.sum(),
        replayed.sum(),
        outbox.corruptFrames() + outbox.tornTails(),
        outbox.deadLetteredRecords(),
        lastError);
  }

  public CircuitBreaker.State breakerState() {
    return breaker.getState();
  }

  public Outbox outbox() {
    return outbox;
  }

  /** One pass of the replayer; also called by tests. Never throws. */
  public void replayTick() {
    try {
      if (stopping) {
        return;
      }
      if (breaker.getState() != CircuitBreaker.State.CLOSED && !probe()) {
        return;
      }
      if (outbox.isEmpty()) {
        return;
      }
      Outbox.ReplayReport report = outbox.replay(this::commitChunk, config.replayChunk());
      if (report.segments() > 0) {
        outboxRefused = false;
        LOG.info(
            "Replayed {} usage records from {} outbox segment(s){}; {} bytes left",
            report.records(),
            report.segments(),
            report.corruptFrames() + report.tornTails() > 0
                ? " (damage: " + report.corruptFrames() + " corrupt region(s), "
                    + report.tornTails() + " torn tail(s); segment(s) quarantined)"
                : "",
            outbox.bytes());
      }
    } catch (Throwable t) {
      LOG.error("Outbox replay failed", t);
    }
  }

  /** Half-open probe; true if the breaker is CLOSED afterwards. */
  private boolean probe() {
    if (!breaker.tryAcquirePermission()) {
      return false; // still open
    }
    long start = System.nanoTime();
    try {
      probe.ping();
      breaker.onSuccess(System.nanoTime() - start, TimeUnit.NANOSECONDS);
    } catch (Exception e) {
      breaker.onError(System.nanoTime() - start, TimeUnit.NANOSECONDS, e);
      lastError = "database: " + describe(e);
      return false;
    }
    return breaker.getState() == CircuitBreaker.State.CLOSED;
  }

  private void commitChunk(List<UsageRecord> chunk) throws Exception {
    if (stopping) {
      throw new ReplayDeferred("ledger closing");
    }
    if (!breaker.tryAcquirePermission()) {
      throw new ReplayDeferred("circuit breaker " + breaker.getState());
    }
    long start = System.nanoTime();
    try {
      database.write(chunk);
      breaker.onSuccess(System.nanoTime() - start, TimeUnit.NANOSECONDS);
      replayed.add(chunk.size());
    } catch (LedgerWriteException e) {
      if (!e.isRecordError()) {
        breaker.onError(System.nanoTime() - start, TimeUnit.NANOSECONDS, e);
        lastError = "database: " + describe(e);
        throw e;
      }
      breaker.onSuccess(System.nanoTime() - start, TimeUnit.NANOSECONDS);
      for (UsageRecord r : chunk) {
        commitOneOrSetAside(r);
      }
    }
  }

  private void commitOneOrSetAside(UsageRecord r) throws LedgerWriteException {
    try {
      database.write(List.of(r));
      replayed.increment();
    } catch (LedgerWriteException e) {
      if (!e.isRecordError()) {
        throw e;
      }
      outbox.deadLetter(r, describe(e));
    }
  }

  /**
   * Stops the replayer after the chunk in progress (the rest of the backlog stays in the outbox
   * for the next start). Does not close the outbox.
   */
  @Override
  public void close() {
    stopping = true;
    replayer.shutdown();
    try {
      if (!replayer.awaitTermination(config.closeTimeout().toMillis(), TimeUnit.MILLISECONDS)) {
        LOG.warn("Outbox replayer did not stop within {}", config.closeTimeout());
        replayer.shutdownNow();
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      replayer.shutdownNow();
    }
  }
}
