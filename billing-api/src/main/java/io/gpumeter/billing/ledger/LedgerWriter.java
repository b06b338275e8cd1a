package io.gpumeter.billing.ledger;

import io.gpumeter.billing.Durability;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.LedgerFullException;
import io.gpumeter.billing.LedgerStats;
import io.gpumeter.billing.LedgerUnavailableException;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageSink;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.LongAdder;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The ledger's entry point: a {@link UsageSink} that batches records into a {@link LedgerStore}.
 *
 * <p>Concurrency: {@link #publish} only offers to a bounded {@link ArrayBlockingQueue} and never
 * blocks; when the queue is full the returned future fails at once with {@link
 * LedgerFullException}. A writer thread ({@code gpumeter-ledger-writer}) takes the first waiting
 * record, drains whatever else is queued (up to {@link LedgerConfig#maxBatchSize()}), and hands the
 * batch to the store in one transaction at once. With {@link LedgerConfig#writers()} above 1, that
 * many threads ({@code gpumeter-ledger-writer-1}, ...) take batches from the one queue and commit
 * them in parallel, each on its own connection; the store is safe for concurrent batches. Futures
 * complete on the writer thread after the commit (normally, also for a duplicate request id) or
 * exceptionally if the store failed; callers that do real work in a continuation should use the
 * {@code *Async} variants. After completing a stored batch's futures the writer calls {@link
 * LedgerStore#acknowledged()}, where a store starts work it deferred past the commit (the local
 * commit log's shipping), so that work follows the answers instead of competing with them.
 *
 * <p>Group commit: an idle writer commits a lone record at once, so a quiet server pays one commit
 * per charge and no wait. Records published while a commit is in flight queue up and form the next
 * batch, so under load batches grow with the commit time by themselves and the number of commits
 * per second stays bounded by the disk, not by the request rate. A {@link LedgerConfig#linger()}
 * above 0 (the default is 0) makes the writer poll that much longer for more records after the
 * drain: fewer, larger transactions, at the price of that wait on every charge.
 *
 * <p>Failures: if the store reports a record error (a constraint or data error) for a batch of
 * several records, each record is written alone so one bad record fails only its own future. A
 * failure of the store itself fails the whole batch; with the resilient store (breaker, retry,
 * outbox: {@code internal.FailoverLedgerStore}) that only happens when the database is down and the
 * outbox refused the batch too. The writer thread never dies of an exception, and in {@code
 * finally} fails every future it still holds.
 *
 * <p>Durability ({@link LedgerConfig#durability()}): in {@link Durability#DURABLE} mode the future
 * completes after the store made the record durable (committed, or fsynced to the outbox by the
 * resilient store); in {@link Durability#FAST} mode it completes as soon as the record is queued,
 * and a record that later fails to be stored is lost (logged and counted in {@link
 * LedgerStats#failed()}). In both modes {@code publish} fails at once when the queue is full
 * ({@link LedgerFullException}) or the store says it cannot make records durable now ({@link
 * LedgerUnavailableException}: database down and outbox full).
 *
 * <p>Close: new records are refused, the writer drains and writes everything already accepted, and
 * close returns when it is done (or after {@link LedgerConfig#closeTimeout()}, failing what is
 * left). A publisher that races with close either gets its record written or a failed future, never
 * a future that stays pending: after enqueueing it checks the closed flag again and takes its
 * record back if it still can.
 */
public final class LedgerWriter implements UsageSink, AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(LedgerWriter.class);

  /** Wakes the writer on close; never written. */
  private static final Pending WAKE = new Pending(null, null);

  /** Returned by {@code publish} in FAST mode: already complete, shared, never completed again. */
  private static final CompletableFuture<Void> ACCEPTED = CompletableFuture.completedFuture(null);

  private final LedgerStore store;
  private final LedgerConfig config;
  private final BlockingQueue<Pending> queue;
  private final Thread[] writers;
  private final AtomicBoolean closing = new AtomicBoolean();
  private volatile boolean closed;

  private final LongAdder accepted = new LongAdder();
  private final LongAdder rejected = new LongAdder();
  private final LongAdder stored = new LongAdder();
  private final LongAdder duplicates = new LongAdder();
  private final LongAdder failed = new LongAdder();
  private final LongAdder batches = new LongAdder();

  private record Pending(UsageRecord record, CompletableFuture<Void> future) {}

  public LedgerWriter(LedgerStore store, LedgerConfig config) {
    this.store = Objects.requireNonNull(store, "store");
    this.config = Objects.requireNonNull(config, "config");
    // + writers leaves room for one WAKE marker per writer when the queue is full of records.
    this.queue = new ArrayBlockingQueue<>(config.queueCapacity() + config.writers());
    this.writers = new Thread[config.writers()];
    for (int i = 0; i < writers.length; i++) {
      String name =
          writers.length == 1 ? "gpumeter-ledger-writer" : "gpumeter-ledger-writer-" + (i + 1);
      writers[i] = new Thread(this::runWriter, name);
      writers[i].setDaemon(true);
      writers[i].start();
    }
  }

  /** A writer over PostgreSQL through {@code dataSource}. */
  public static LedgerWriter jdbc(DataSource dataSource, LedgerConfig config) {
    return new LedgerWriter(new JdbcLedgerStore(dataSource), config);
  }

  /**
   * Queues {@code record} and returns at once. In DURABLE mode the future completes when the record
   * is durable (committed, already stored under the same request id, or fsynced to the outbox), or
   * fails with {@link LedgerWriteException} if the store could not make it durable; in FAST mode
   * the future is complete on return. Either way it fails at once with {@link LedgerFullException}
   * if the queue is full, {@link LedgerUnavailableException} if the store cannot make records
   * durable now, or {@link IllegalStateException} if the writer is closed.
   */
  @Override
  public CompletableFuture<Void> publish(UsageRecord record) {
    Objects.requireNonNull(record, "record");
    if (closed) {
      rejected.increment();
      return CompletableFuture.failedFuture(closedException());
    }
    if (!store.isAccepting()) {
      String reason = store.refusalReason();
      if (reason != null) {
        rejected.increment();
        return CompletableFuture.failedFuture(new LedgerUnavailableException(reason));
      }
    }
    boolean fast = config.durability() == Durability.FAST;
    Pending p = new Pending(record, fast ? null : new CompletableFuture<>());
    if (queue.size() >= config.queueCapacity() || !queue.offer(p)) {
      rejected.increment();
      return CompletableFuture.failedFuture(new LedgerFullException(config.queueCapacity()));
    }
    if (closed && queue.remove(p)) {
      rejected.increment();
      return CompletableFuture.failedFuture(closedException());
    }
    accepted.increment();
    return fast ? ACCEPTED : p.future;
  }

  /**
   * Cheap check for admission control: false when the writer is closed, its queue is full, or the
   * store cannot make records durable now. See {@link Billing#health()} for the reason.
   */
  public boolean isAccepting() {
    return !closed && queue.size() < config.queueCapacity() && store.isAccepting();
  }

  /** Records waiting for the writer now. */
  public int queueDepth() {
    return closed ? (int) queue.stream().filter(p -> p != WAKE).count() : queue.size();
  }

  public LedgerConfig config() {
    return config;
  }

  private static IllegalStateException closedException() {
    return new IllegalStateException("ledger writer is closed; the usage record was not accepted");
  }

  private void runWriter() {
    List<Pending> batch = new ArrayList<>(config.maxBatchSize());
    long lingerNs = config.linger().toNanos();
    try {
      while (true) {
        Pending first = queue.take();
        if (first != WAKE) {
          batch.add(first);
        }
        queue.drainTo(batch, config.maxBatchSize() - batch.size());
        if (!closed && lingerNs > 0) {
          long deadline = System.nanoTime() + lingerNs;
          while (batch.size() < config.maxBatchSize()) {
            long left = deadline - System.nanoTime();
            Pending next = left > 0 ? queue.poll(left, TimeUnit.NANOSECONDS) : null;
            if (next == null) {
              break;
            }
            batch.add(next);
            queue.drainTo(batch, config.maxBatchSize() - batch.size());
          }
        }
        batch.removeIf(p -> p == WAKE);
        if (!batch.isEmpty()) {
          flush(batch);
          batch.clear();
        }
        if (closed && queue.isEmpty()) {
          queue.offer(WAKE); // a writer still waiting in take() wakes and stops too
          return;
        }
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } catch (Throwable t) {
      LOG.error("Ledger writer stopped unexpectedly", t);
    } finally {
      failAll(
          batch, new IllegalStateException("ledger writer stopped before the record was written"));
    }
  }

  /** Writes one batch and completes its futures; never throws. */
  private void flush(List<Pending> batch) {
    List<UsageRecord> records = new ArrayList<>(batch.size());
    for (Pending p : batch) {
      records.add(p.record);
    }
    try {
      int inserted = store.write(records);
      batches.increment();
      stored.add(inserted);
      duplicates.add(records.size() - inserted);
      for (Pending p : batch) {
        if (p.future != null) {
          p.future.complete(null);
        }
      }
      acknowledged();
    } catch (LedgerWriteException e) {
      if (e.isRecordError() && batch.size() > 1) {
        LOG.warn(
            "Ledger batch of {} refused ({}); writing its records one by one",
            batch.size(),
            e.getMessage());
        for (Pending p : batch) {
          flush(List.of(p));
        }
      } else {
        LOG.error("Could not store {} usage records", batch.size(), e);
        failAll(batch, e);
      }
    } catch (RuntimeException e) {
      LOG.error("Ledger store failed on {} usage records", batch.size(), e);
      failAll(batch, e);
    }
  }

  /** Tells the store its batch's answers are handed over (it may start deferred work now). */
  private void acknowledged() {
    try {
      store.acknowledged();
    } catch (RuntimeException e) {
      LOG.warn("Ledger store failed after a batch was acknowledged", e);
    }
  }

  private void failAll(List<Pending> batch, Throwable cause) {
    int lost = 0;
    for (Pending p : batch) {
      if (p == WAKE) {
        continue;
      }
      if (p.future == null) {
        lost++; // FAST mode: accepted, now lost; nobody waits for it
        failed.increment();
      } else if (p.future.completeExceptionally(cause)) {
        failed.increment();
      }
    }
    if (lost > 0) {
      LOG.error("{} usage records accepted in FAST mode were lost: {}", lost, cause.toString());
    }
  }

  public LedgerStats stats() {
    return new LedgerStats(
        accepted.sum(),
        rejected.sum(),
        stored.sum(),
        duplicates.sum(),
        failed.sum(),
        batches.sum(),
        queueDepth());
  }

  /**
   * Refuses new records, writes everything accepted so far and stops the writer thread. Waits up to
   * {@link LedgerConfig#closeTimeout()}; records still queued after that fail. Idempotent.
   */
  @Override
  public void close() {
    if (!closing.compareAndSet(false, true)) {
      joinQuietly(config.closeTimeout().toMillis());
      return;
    }
    closed = true;
    queue.offer(WAKE);
    joinQuietly(config.closeTimeout().toMillis());
    if (anyAlive()) {
      LOG.error(
          "Ledger writer did not drain within {}; failing queued records", config.closeTimeout());
    }
    List<Pending> left = new ArrayList<>();
    queue.drainTo(left);
    failAll(left, new IllegalStateException("ledger writer closed before the record was written"));
  }

  /** Waits for every writer thread, {@code millis} in all. */
  private void joinQuietly(long millis) {
    long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(Math.max(1, millis));
    try {
      for (Thread w : writers) {
        long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
        w.join(Math.max(1, left));
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  private boolean anyAlive() {
    for (Thread w : writers) {
      if (w.isAlive()) {
        return true;
      }
    }
    return false;
  }
}
