package io.gpumeter.billing.ledger;

import io.gpumeter.metering.UsageRecord;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A {@link LedgerStore} whose commit point is the local {@link CommitLog}: {@link #write} returns
 * once the batch (records and measured time together) is synced in the log, and a shipper thread
 * then writes each batch, in commit order, to the {@code downstream} store (PostgreSQL), retrying
 * until it succeeds or the store is closed. A segment is dropped once every batch in it is shipped.
 *
 * <p><b>Restart:</b> {@link #open} ships what an earlier process left in the log before it returns
 * (records in chunks, then each measured batch alone). Shipping is idempotent downstream (claims by
 * request id, measured batches by batch id), so a batch shipped before a crash but not yet dropped
 * from the log is stored once. A batch whose shipping is refused as bad data ({@link
 * LedgerWriteException#isRecordError()}) is logged and not retried; from then on no segment is
 * dropped, so it stays in the log (and the next {@link #open} fails on it: set aside by hand).
 *
 * <p><b>Concurrency:</b> any number of threads may call {@link #write}; {@code committing} counts
 * writes between their commit and their hand-over to the shipper, and segments are dropped only
 * when it is zero, so a synced batch is never in a dropped segment before it is shipped. Adding a
 * batch to the shipper's queue wakes no thread: the shipper is woken by {@link #acknowledged()},
 * which {@link LedgerWriter} calls after it completed the batch's futures, so the PostgreSQL write
 * starts after the answers are handed over, not against them (an idle shipper also looks every 100
 * ms, for other callers of {@code write}).
 *
 * <p><b>Bound:</b> {@link #isAccepting()} is false while the log holds more than {@code maxBytes}
 * on disk ({@link CommitLog#bytesOnDisk()}), so the ledger refuses new charges (503) until shipping
 * frees segments; a batch already accepted is still committed, so the log may pass the bound by
 * what the writer's queue holds.
 *
 * <p>Used by {@link Ledger} when {@code ledger.commit_point=local} (billing-api README, "The
 * preallocated log").
 */
public final class LocalCommitLedgerStore implements LedgerStore, AutoCloseable {
  private static final Logger log = LoggerFactory.getLogger(LocalCommitLedgerStore.class);
  private static final int REPLAY_CHUNK = 500;

  /** How long an idle shipper waits before looking at the queue again without being woken. */
  private static final long IDLE_WAIT_NS = TimeUnit.MILLISECONDS.toNanos(100);

  private final CommitLog commitLog;
  private final LedgerStore downstream;
  private final Duration retryDelay;
  private final long maxBytes;
  private volatile String shipError; // the last failure of shipping, null once a batch ships
  // not a blocking queue: adding wakes no one; the shipper is woken by acknowledged()
  private final ConcurrentLinkedQueue<Shipment> queue = new ConcurrentLinkedQueue<>();
  private final AtomicInteger committing = new AtomicInteger();
  private final AtomicLong unshippedRecords = new AtomicLong();
  private final AtomicLong shippedBatches = new AtomicLong();
  private final Thread shipper;
  private volatile boolean closed;
  private boolean keepSegments; // shipper thread only

  // read-your-writes: shipments are numbered as they are queued (in queue order, so in shipping
  // order); a read waits until the shipper has passed the number queued when it started
  private final AtomicLong queuedShipments = new AtomicLong();
  private final Object shippedMonitor = new Object();
  private long shippedThrough; // guarded by shippedMonitor

  private record Shipment(
      long number, long segment, List<UsageRecord> records, MeasuredBatch measured) {}

  private LocalCommitLedgerStore(
      CommitLog commitLog, LedgerStore downstream, Duration retryDelay, long maxBytes) {
    this.commitLog = commitLog;
    this.maxBytes = maxBytes;
    this.downstream = downstream;
    this.retryDelay = retryDelay;
    this.shipper = new Thread(this::shipLoop, "gpumeter-commit-log-shipper");
    shipper.setDaemon(true);
  }

  /**
   * Opens the log, ships what it holds from earlier processes to {@code downstream} (on this
   * thread; a failure there leaves the log untouched and is thrown), and starts shipping.
   *
   * @throws LedgerWriteException if what the log held could not be shipped
   */
  public static LocalCommitLedgerStore open(
      CommitLog commitLog, LedgerStore downstream, Duration retryDelay)
      throws LedgerWriteException {
    return open(commitLog, downstream, retryDelay, Long.MAX_VALUE);
  }

  /**
   * Like {@link #open(CommitLog, LedgerStore, Duration)}, refusing new charges ({@link
   * #isAccepting()}) while the log holds more than {@code maxBytes} on disk.
   */
  public static LocalCommitLedgerStore open(
      CommitLog commitLog, LedgerStore downstream, Duration retryDelay, long maxBytes)
      throws LedgerWriteException {
    LocalCommitLedgerStore store =
        new LocalCommitLedgerStore(commitLog, downstream, retryDelay, maxBytes);
    store.replay();
    store.shipper.start();
    return store;
  }

  private void replay() throws LedgerWriteException {
    List<UsageRecord> records = commitLog.unshipped();
    for (int from = 0; from < records.size(); from += REPLAY_CHUNK) {
      downstream.write(records.subList(from, Math.min(records.size(), from + REPLAY_CHUNK)));
    }
    for (MeasuredBatch m : commitLog.unshippedMeasured()) {
      downstream.write(List.of(), m);
    }
    if (!records.isEmpty() || !commitLog.unshippedMeasured().isEmpty()) {
      log.info(
          "Shipped {} records and {} measured batches left in the commit log by an earlier process",
          records.size(),
          commitLog.unshippedMeasured().size());
    }
    try {
      commitLog.shipped(Long.MAX_VALUE); // nothing is being written yet: every old segment goes
    } catch (IOException e) {
      throw new LedgerWriteException("could not drop shipped commit-log segments", e, false);
    }
  }

  @Override
  public int write(List<UsageRecord> records) throws LedgerWriteException {
    return write(records, null);
  }

  @Override
  public int write(List<UsageRecord> records, MeasuredBatch measured) throws LedgerWriteException {
    if (records.isEmpty() && measured == null) {
      return 0;
    }
    if (closed) {
      throw new LedgerWriteException("commit log closed", null, false);
    }
    committing.incrementAndGet();
    try {
      long segment;
      try {
        segment = commitLog.commit(records, measured).join();
      } catch (RuntimeException e) {
        throw new LedgerWriteException(
            "could not commit " + records.size() + " records to the local log", e, false);
      }
      unshippedRecords.addAndGet(records.size());
      enqueue(segment, records, measured);
      return records.size(); // like the outbox: new or not is known only downstream
    } finally {
      committing.decrementAndGet();
    }
  }

  private void enqueue(long segment, List<UsageRecord> records, MeasuredBatch measured) {
    List<UsageRecord> copy = List.copyOf(records);
    synchronized (queuedShipments) { // numbers follow queue order
      queue.add(new Shipment(queuedShipments.incrementAndGet(), segment, copy, measured));
    }
  }

  /**
   * The shipping position of everything acknowledged so far: every {@link #write} that has returned
   * is at or before it. Pass it to {@link #awaitShippedThrough}.
   */
  public long committedPosition() {
    return queuedShipments.get();
  }

  /**
   * Waits until the shipper has passed {@code position} (every batch acknowledged before {@link
   * #committedPosition()} returned it is stored downstream, or refused as bad data and kept in the
   * log), at most {@code deadline}. Unlike {@link #awaitShipped}, later writes do not delay it, so
   * it ends under continuous load.
   *
   * @return whether the position was passed in time
   */
  public boolean awaitShippedThrough(long position, Duration deadline) {
    long end = System.nanoTime() + deadline.toNanos();
    synchronized (shippedMonitor) {
      while (shippedThrough < position) {
        long left = end - System.nanoTime();
        if (left <= 0) {
          return false;
        }
        try {
          TimeUnit.NANOSECONDS.timedWait(shippedMonitor, left);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          return false;
        }
      }
      return true;
    }
  }

  /** False while the log holds more than its bound on disk (cheap: volatile reads). */
  @Override
  public boolean isAccepting() {
    return !closed && commitLog.bytesOnDisk() <= maxBytes;
  }

  @Override
  public String refusalReason() {
    if (isAccepting()) {
      return null;
    }
    if (closed) {
      return "the commit log is closed";
    }
    String why = shipError;
    return "the local commit log is full ("
        + commitLog.bytesOnDisk()
        + " of "
        + maxBytes
        + " bytes, "
        + unshippedRecords.get()
        + " records not shipped to the billing database"
        + (why != null ? ": " + why : "")
        + ")";
  }

  /** Why the last attempt to ship a batch failed, or null if the last batch shipped. */
  public String shipError() {
    return shipError;
  }

  /** The log's size on disk and its bound. */
  public long bytesOnDisk() {
    return commitLog.bytesOnDisk();
  }

  public long maxBytes() {
    return maxBytes;
  }

  public CommitLog commitLog() {
    return commitLog;
  }

  /** Records committed in the log and not yet stored downstream. */
  public long unshippedRecords() {
    return unshippedRecords.get();
  }

  /** Batches stored downstream since {@link #open}. */
  public long shippedBatches() {
    return shippedBatches.get();
  }

  /**
   * Waits until everything committed so far is shipped, at most {@code deadline}.
   *
   * @return whether it was
   */
  public boolean awaitShipped(Duration deadline) {
    long end = System.nanoTime() + deadline.toNanos();
    while (unshippedRecords.get() > 0 || !queue.isEmpty() || committing.get() > 0) {
      long left = end - System.nanoTime();
      if (left <= 0) {
        return false;
      }
      LockSupport.parkNanos(Math.min(left, TimeUnit.MILLISECONDS.toNanos(1)));
    }
    return true;
  }

  /**
   * Wakes the shipper once the writer has handed the answers of the batch just committed over
   * (their futures are complete), so its PostgreSQL write starts after them instead of competing
   * with them for the CPU. A batch committed by a caller that never calls this is shipped within
   * the shipper's idle wait ({@link #IDLE_WAIT_NS}).
   */
  @Override
  public void acknowledged() {
    if (!queue.isEmpty()) {
      LockSupport.unpark(shipper);
    }
  }

  private void shipLoop() {
    while (!closed || !queue.isEmpty()) {
      if (closed && Thread.interrupted()) {
        return; // close() interrupts: what is queued stays in the log for the next start
      }
      Shipment s = queue.poll();
      if (s == null) {
        LockSupport.parkNanos(this, IDLE_WAIT_NS); // woken by acknowledged() or close()
        continue;
      }
      if (!ship(s)) {
        return; // closed while downstream refused: the log keeps it for the next start
      }
      unshippedRecords.addAndGet(-s.records.size());
      shippedBatches.incrementAndGet();
      synchronized (shippedMonitor) {
        shippedThrough = s.number;
        shippedMonitor.notifyAll();
      }
      dropShippedSegments(s.segment);
    }
  }

  /** Ships one batch, retrying transient failures; false if the store closed first. */
  private boolean ship(Shipment s) {
    while (true) {
      try {
        downstream.write(s.records, s.measured);
        shipError = null;
        return true;
      } catch (LedgerWriteException e) {
        if (e.isRecordError()) {
          log.error(
              "Downstream refused {} records from the commit log as bad data; no segment is"
                  + " dropped from now on, so they stay in the log",
              s.records.size(),
              e);
          keepSegments = true;
          return true;
        }
        if (closed) {
          return false;
        }
        if (shipError == null) {
          log.warn("Shipping from the commit log failed, retrying: {}", e.getMessage());
        }
        shipError = FailoverLedgerStore.describe(e);
        LockSupport.parkNanos(retryDelay.toNanos());
      } catch (RuntimeException e) {
        if (closed) {
          return false;
        }
        log.warn("Shipping from the commit log failed, retrying", e);
        shipError = FailoverLedgerStore.describe(e);
        LockSupport.parkNanos(retryDelay.toNanos());
      }
    }
  }

  /**
   * Drops the segments before {@code shippedSegment} (the segment of the batch just shipped) that
   * no queued batch is in. A batch in an earlier segment was synced before that one; with no write
   * between its commit and its hand-over ({@code committing} 0), it is queued or shipped. Later
   * commits go to the segment in use or a newer one.
   */
  private void dropShippedSegments(long shippedSegment) {
    if (keepSegments || committing.get() != 0) {
      return; // refused records must stay; or a synced batch may not be queued yet
    }
    long upTo = shippedSegment - 1;
    List<Shipment> waiting = new ArrayList<>(queue);
    for (Shipment w : waiting) {
      upTo = Math.min(upTo, w.segment - 1);
    }
    try {
      commitLog.shipped(upTo); // the segment in use is kept
    } catch (IOException e) {
      log.warn("Could not drop shipped commit-log segments (they will be shipped again)", e);
    }
  }

  /** Stops shipping (what is not shipped stays in the log for the next {@link #open}). */
  @Override
  public void close() {
    closed = true;
    shipper.interrupt();
    try {
      shipper.join(TimeUnit.SECONDS.toMillis(10));
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    commitLog.close();
  }
}
