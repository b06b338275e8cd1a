package io.gpumeter.billing.ledger;

import io.github.resilience4j.circuitbreaker.CircuitBreaker;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.metering.UsageRecord;
import java.util.List;
import java.util.Objects;
import java.util.UUID;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.LongAdder;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Puts the {@link Outbox} back into the database: a single thread, every {@link
 * LedgerConfig#replayInterval()}. It shares the {@link FailoverLedgerStore}'s circuit breaker.
 *
 * <p>When the breaker is OPEN it waits for the breaker's open duration, then probes ({@code SELECT
 * 1}) with the half-open permit; a success closes the breaker. With the breaker CLOSED it replays
 * the outbox in order, {@link LedgerConfig#replayChunk()} records per transaction through the same
 * idempotent {@link LedgerStore} (claims by request id; rollups only from inserted rows), so a
 * record replayed twice (a crash between commit and segment deletion) is stored and counted once. A
 * chunk refused for a record error is written record by record; a record the database refuses alone
 * is set aside in the outbox's dead-letter file so it cannot block the backlog. The writer keeps
 * writing new batches directly while the backlog drains: order does not matter to an idempotent
 * ledger whose rollups are sums.
 */
final class OutboxReplayer implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(OutboxReplayer.class);

  /** Checks that the database answers. */
  @FunctionalInterface
  interface Probe {
    void ping() throws Exception;
  }

  /** Settles the accrual of the outbox owner's earlier processes; see {@link JdbcLedgerStore}. */
  @FunctionalInterface
  interface Settler {
    long settle(UUID ownerId, UUID self) throws Exception;
  }

  /** Thrown inside a replay to stop it without blaming the database. */
  private static final class ReplayDeferred extends Exception {
    ReplayDeferred(String why) {
      super(why, null, false, false);
    }
  }

  private final FailoverLedgerStore store;
  private final LedgerStore database;
  private final CircuitBreaker breaker;
  private final Outbox outbox;
  private final Probe probe;
  private final LedgerConfig config;
  private final ScheduledExecutorService replayer;
  private final LongAdder replayed = new LongAdder();
  private volatile boolean stopping;
  private final Settler settler;
  private volatile boolean settled;

  OutboxReplayer(FailoverLedgerStore store, Probe probe, LedgerConfig config) {
    this(store, probe, null, config);
  }

  /**
   * @param settler settles earlier processes' unrecorded accrual once the outbox was first found
   *     empty with the database up (null: the store keeps no measured time)
   */
  OutboxReplayer(FailoverLedgerStore store, Probe probe, Settler settler, LedgerConfig config) {
    this.settler = settler;
    this.store = Objects.requireNonNull(store, "store");
    this.database = store.database();
    this.breaker = store.breaker();
    this.outbox = store.outbox();
    this.probe = Objects.requireNonNull(probe, "probe");
    this.config = Objects.requireNonNull(config, "config");
    this.replayer =
        Executors.newSingleThreadScheduledExecutor(
            r -> {
              Thread t = new Thread(r, "gpumeter-outbox-replayer");
              t.setDaemon(true);
              return t;
            });
  }

  /** Starts the replayer; its first pass runs at once (a backlog left by a crash is replayed). */
  OutboxReplayer start() {
    long interval = config.replayInterval().toMillis();
    replayer.scheduleWithFixedDelay(this::replayTick, 0, interval, TimeUnit.MILLISECONDS);
    return this;
  }

  /** Records replayed from the outbox into the database since start. */
  long replayedRecords() {
    return replayed.sum();
  }

  /** One pass of the replayer; also called by tests. Never throws. */
  void replayTick() {
    try {
      if (stopping) {
        return;
      }
      if (breaker.getState() != CircuitBreaker.State.CLOSED && !probe()) {
        return;
      }
      if (outbox.isEmpty()) {
        settleOnce();
        return;
      }
      Outbox.ReplayReport report =
          outbox.replay(this::commitChunk, this::commitMeasured, config.replayChunk());
      if (report.segments() > 0) {
        store.outboxDrained();
        LOG.info(
            "Replayed {} usage records from {} outbox segment(s){}; {} bytes left",
            report.records(),
            report.segments(),
            report.corruptFrames() + report.tornTails() > 0
                ? " (damage: "
                    + report.corruptFrames()
                    + " corrupt region(s), "
                    + report.tornTails()
                    + " torn tail(s); segment(s) quarantined)"
                : "",
            outbox.bytes());
      }
    } catch (Throwable t) {
      LOG.error("Outbox replay failed", t);
    }
  }

  /**
   * After a crash, the successor (this process, holding the same outbox) records the device time
   * its predecessors handed out but never recorded as unbilled. Only once the outbox is empty:
   * every batch they made durable is then in the database.
   */
  private void settleOnce() throws Exception {
    if (settled || settler == null || store.ownerId() == null) {
      return;
    }
    long ns = settler.settle(store.ownerId(), store.instanceId());
    settled = true;
    if (ns > 0) {
      LOG.warn(
          "Recorded {} ns of device time as unbilled (reason crash): handed out to requests by an"
              + " earlier process on this outbox that died before their charges were stored",
          ns);
    }
  }

  private void commitMeasured(MeasuredBatch batch) throws Exception {
    if (stopping) {
      throw new ReplayDeferred("ledger closing");
    }
    if (!breaker.tryAcquirePermission()) {
      throw new ReplayDeferred("circuit breaker " + breaker.getState());
    }
    long start = System.nanoTime();
    try {
      database.write(List.of(), batch);
      breaker.onSuccess(System.nanoTime() - start, TimeUnit.NANOSECONDS);
    } catch (LedgerWriteException e) {
      breaker.onError(System.nanoTime() - start, TimeUnit.NANOSECONDS, e);
      store.databaseFailed(e);
      throw e;
    }
  }

  /**
   * Re-applies the set-aside records (quarantined segments, dead letters) record by record; see
   * {@link Outbox#replaySetAside}. Runs on the caller's thread.
   *
   * @throws Exception if the database failed (what was applied so far stays applied)
   */
  Outbox.SetAsideReport replaySetAside() throws Exception {
    Outbox.SetAsideReport r = replaySetAside(outbox, database);
    replayed.add(r.applied());
    return r;
  }

  /** {@link #replaySetAside()} for any outbox and database store (the CLI, with no server). */
  static Outbox.SetAsideReport replaySetAside(Outbox outbox, LedgerStore database)
      throws Exception {
    return outbox.replaySetAside(
        r -> {
          try {
            int n = database.write(List.of(r));
            if (n > 0) {
              return Outbox.Outcome.APPLIED;
            }
            return Outbox.Outcome.ALREADY_PRESENT;
          } catch (LedgerWriteException e) {
            if (e.isRecordError()) {
              return Outbox.Outcome.REFUSED;
            }
            throw e;
          }
        },
        b -> database.write(List.of(), b));
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
      store.databaseFailed(e);
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
        store.databaseFailed(e);
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
      outbox.deadLetter(r, FailoverLedgerStore.describe(e));
    }
  }

  /**
   * Stops the replayer after the chunk in progress (the rest of the backlog stays in the outbox for
   * the next start). Does not close the outbox.
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
