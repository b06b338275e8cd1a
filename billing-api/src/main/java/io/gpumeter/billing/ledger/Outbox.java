package io.gpumeter.billing.ledger;

import io.gpumeter.metering.UsageRecord;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;
import java.util.stream.Stream;
import java.util.zip.CRC32C;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Durable local outbox for usage records that could not be written to PostgreSQL.
 *
 * <p><b>Format:</b> append-only segment files {@code segment-NNNNNNNNNNNNNNNNNNNN.log} in one
 * directory, each a sequence of frames {@code [magic u32 "GMOB"][length u32][crc32c u32][payload]}
 * where the payload is {@link UsageRecordCodec}'s encoding. A segment grows to {@code segmentBytes}
 * and is then sealed; a reopened outbox always starts a new segment, so a torn tail left by a crash
 * is never appended to.
 *
 * <p><b>Durability:</b> group commit. {@link #append} queues the frames and returns a future; one
 * writer thread writes everything queued, calls {@code force}, and only then completes the futures.
 * A completed future means the records survive a crash of the process or the machine.
 *
 * <p><b>Replay:</b> {@link #replay} seals the active segment and hands every sealed segment's
 * records, in order, to a committer; a segment is deleted only after all its records were
 * committed. If the committer fails, the segment stays and is replayed again later (the ledger is
 * idempotent on request id, so a record committed twice is stored once).
 *
 * <p><b>Damage:</b> a frame whose magic, length, checksum or payload is wrong is reported and
 * skipped, and reading resynchronises at the next frame whose checksum holds, so intact records
 * after the damage are still replayed; a frame cut short at the end of a segment (a torn tail) is
 * reported and dropped. A damaged segment is moved to {@code quarantine/} after its intact records
 * were committed, for an operator to inspect. A record that the database itself refuses on replay
 * can be set aside with {@link #deadLetter} ({@code dead-letter.log}, same frame format) so it does
 * not block the segment forever.
 *
 * <p><b>Size:</b> {@link #bytes()} counts the bytes of the segment files that exist plus the
 * appends still queued; a write that fails half-way still counts what reached the file, so the
 * count returns to zero exactly when every segment was replayed.
 *
 * <p><b>Ownership:</b> one {@code Outbox} per directory: it holds an exclusive lock on {@code
 * outbox.lock} until {@link #close()} (or until the process dies), and a second open fails.
 */
public final class Outbox implements AutoCloseable {
  private static final Logger log = LoggerFactory.getLogger(Outbox.class);
  static final int MAGIC = 0x474D4F42;
  static final int HEADER = 12;
  static final int MAX_FRAME = 1 << 20;
  static final String LOCK_FILE = "outbox.lock";
  static final String DEAD_LETTER_FILE = "dead-letter.log";
  static final String QUARANTINE_DIR = "quarantine";
  static final String OWNER_FILE = "ledger-owner";
  static final String REPLAYED_DIR = "replayed";

  private final Path dir;
  private final long maxBytes;
  private final long segmentBytes;
  private final ReentrantLock writeLock = new ReentrantLock();
  private final LinkedBlockingQueue<Pending> queue = new LinkedBlockingQueue<>();

  /** Bytes of appends queued but not yet written (or refused). */
  private final AtomicLong reserved = new AtomicLong();

  /** Bytes written into segment files that still exist in the directory. */
  private final AtomicLong onDisk = new AtomicLong();

  private final AtomicLong deadLettered = new AtomicLong();

  /** Entries in dead-letter.log now (read from disk at open, then kept up to date). */
  private final AtomicLong deadLettersWaiting = new AtomicLong();

  /** Segments in quarantine/ now, and the intact records in them (from disk at open). */
  private final AtomicLong quarantinedSegments = new AtomicLong();

  private final AtomicLong quarantinedRecords = new AtomicLong();
  private final FileChannel lockChannel;
  private final FileLock lock;
  private volatile String lastWriteFailure;
  private final UUID ownerId;
  private final AtomicLong corruptFrames = new AtomicLong();
  private final AtomicLong tornTails = new AtomicLong();
  private final AtomicLong appended = new AtomicLong();
  private final Thread writer;
  private volatile boolean closed;
  private long nextSegment;
  private FileChannel active;
  private Path activePath;
  private long activeSize;

  private record Pending(List<byte[]> frames, long size, CompletableFuture<Void> done) {}

  /** Commits one chunk of replayed records; throws if they could not be committed. */
  @FunctionalInterface
  public interface Committer {
    void commit(List<UsageRecord> records) throws Exception;
  }

  /** Commits one measured batch read back from a segment; throws if it could not be committed. */
  @FunctionalInterface
  public interface MeasuredCommitter {
    void commit(MeasuredBatch batch) throws Exception;
  }

  /** What re-applying one set-aside record did. */
  public enum Outcome {
    /** Stored now. */
    APPLIED,
    /** Already stored under the same request id. */
    ALREADY_PRESENT,
    /** Refused by the database again (a constraint or data error): kept set aside. */
    REFUSED
  }

  /** Re-applies one set-aside record; throws (stopping the replay) if the database failed. */
  @FunctionalInterface
  public interface RecordApplier {
    Outcome apply(UsageRecord record) throws Exception;
  }

  /** What a replay of the set-aside records (quarantine and dead letters) did. */
  public record SetAsideReport(
      long applied,
      long alreadyPresent,
      long refused,
      int segmentsCleared,
      int segmentsLeft,
      long deadLettersLeft) {}

  /** What a replay did. */
  public record ReplayReport(
      int segments, long records, long corruptFrames, long tornTails, boolean complete) {}

  private Outbox(Path dir, long maxBytes, long segmentBytes) throws IOException {
    this.dir = dir;
    this.maxBytes = maxBytes;
    this.segmentBytes = segmentBytes;
    Files.createDirectories(dir);
    this.lockChannel =
        FileChannel.open(
            dir.resolve(LOCK_FILE), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
    FileLock l;
    try {
      l = lockChannel.tryLock();
    } catch (OverlappingFileLockException e) {
      l = null;
    }
    if (l == null) {
      lockChannel.close();
      throw new IllegalStateException(
          "outbox directory " + dir + " is in use by another process or Outbox");
    }
    this.lock = l;
    long max = -1;
    long total = 0;
    for (Path p : segments()) {
      max = Math.max(max, segmentNumber(p));
      total += Files.size(p);
    }
    nextSegment = max + 1;
    onDisk.set(total);
    countSetAside();
    this.ownerId = readOrCreateOwner();
    this.writer = new Thread(this::writeLoop, "outbox-writer");
    this.writer.setDaemon(true);
    this.writer.start();
  }

  /**
   * Opens (or creates) an outbox directory.
   *
   * @throws IllegalStateException if another process or {@code Outbox} has the directory open
   * @throws UncheckedIOException if the directory cannot be created or read
   * @param maxBytes total size of all segments at most; beyond it appends fail with {@link
   *     OutboxFullException}
   * @param segmentBytes size at which a segment is sealed
   */
  public static Outbox open(Path dir, long maxBytes, long segmentBytes) {
    Objects.requireNonNull(dir, "dir");
    if (maxBytes <= 0 || segmentBytes <= 0) {
      throw new IllegalArgumentException(
          "maxBytes and segmentBytes must be > 0, were " + maxBytes + " and " + segmentBytes);
    }
    try {
      return new Outbox(dir, maxBytes, segmentBytes);
    } catch (IOException e) {
      throw new UncheckedIOException("cannot open outbox in " + dir, e);
    }
  }

  public Path directory() {
    return dir;
  }

  /**
   * The id of this outbox directory's owner: created once (fsynced) and kept in {@code
   * ledger-owner}, so every process that opens the directory, one after the other, has the same.
   */
  public UUID ownerId() {
    return ownerId;
  }

  private UUID readOrCreateOwner() throws IOException {
    Path f = dir.resolve(OWNER_FILE);
    if (Files.exists(f)) {
      try {
        return UUID.fromString(Files.readString(f, StandardCharsets.US_ASCII).trim());
      } catch (IllegalArgumentException e) {
        throw new IOException("damaged " + f + ": " + e.getMessage(), e);
      }
    }
    UUID id = UUID.randomUUID();
    Path tmp = dir.resolve(OWNER_FILE + ".tmp");
    try (FileChannel ch =
        FileChannel.open(
            tmp,
            StandardOpenOption.CREATE,
            StandardOpenOption.WRITE,
            StandardOpenOption.TRUNCATE_EXISTING)) {
      ch.write(ByteBuffer.wrap((id + "\n").getBytes(StandardCharsets.US_ASCII)));
      ch.force(false);
    }
    Files.move(tmp, f, StandardCopyOption.ATOMIC_MOVE);
    try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
      d.force(true);
    } catch (IOException ignored) {
      // some file systems cannot fsync a directory
    }
    return id;
  }

  /** Bytes held in segments, including queued appends. */
  public long bytes() {
    return reserved.get() + onDisk.get();
  }

  public long maxBytes() {
    return maxBytes;
  }

  /** True if no segment holds records (nothing to replay). */
  public boolean isEmpty() {
    return bytes() == 0;
  }

  public long corruptFrames() {
    return corruptFrames.get();
  }

  public long tornTails() {
    return tornTails.get();
  }

  public long appendedRecords() {
    return appended.get();
  }

  /** Records set aside with {@link #deadLetter} since this outbox was opened. */
  public long deadLetteredRecords() {
    return deadLettered.get();
  }

  /** Entries waiting in {@code dead-letter.log} (survives restarts: counted from disk at open). */
  public long deadLettersWaiting() {
    return deadLettersWaiting.get();
  }

  /** Damaged segments waiting in {@code quarantine/} (counted from disk at open). */
  public long quarantinedSegments() {
    return quarantinedSegments.get();
  }

  /** Intact records in the segments waiting in {@code quarantine/}. */
  public long quarantinedRecords() {
    return quarantinedRecords.get();
  }

  private void countSetAside() throws IOException {
    long segs = 0;
    long recs = 0;
    for (Path q : quarantined()) {
      segs++;
      recs += SegmentReader.read(Files.readAllBytes(q)).records().size();
    }
    quarantinedSegments.set(segs);
    quarantinedRecords.set(recs);
    Path dl = dir.resolve(DEAD_LETTER_FILE);
    deadLettersWaiting.set(
        Files.exists(dl) ? SegmentReader.read(Files.readAllBytes(dl)).records().size() : 0);
  }

  private List<Path> quarantined() throws IOException {
    Path q = dir.resolve(QUARANTINE_DIR);
    if (!Files.isDirectory(q)) {
      return List.of();
    }
    try (Stream<Path> s = Files.list(q)) {
      return s.filter(p -> p.getFileName().toString().matches("segment-\\d{20}\\.log"))
          .sorted()
          .toList();
    }
  }

  /**
   * Why the last write to a segment failed (the disk refused it), or null if the last write
   * succeeded.
   */
  public String lastWriteFailure() {
    return lastWriteFailure;
  }

  /**
   * Queues records; the future completes once they are fsynced, or fails with {@link
   * OutboxFullException} (size limit or a failed write) — then nothing of this call was kept.
   */
  public CompletableFuture<Void> append(List<UsageRecord> records) {
    return append(records, null);
  }

  /**
   * Queues records and, in the same group (one fsync, all or nothing acknowledged), the measured
   * side of their batch ({@code measured} may be null).
   */
  public CompletableFuture<Void> append(List<UsageRecord> records, MeasuredBatch measured) {
    if (closed) {
      return CompletableFuture.failedFuture(new OutboxFullException("outbox is closed"));
    }
    List<byte[]> frames = new ArrayList<>(records.size());
    long size = 0;
    for (UsageRecord r : records) {
      byte[] f = frame(UsageRecordCodec.encode(r));
      frames.add(f);
      size += f.length;
    }
    if (measured != null) {
      byte[] f = frame(measured.encode());
      frames.add(f);
      size += f.length;
    }
    long after = reserved.addAndGet(size) + onDisk.get();
    if (after > maxBytes) {
      reserved.addAndGet(-size);
      return CompletableFuture.failedFuture(
          new OutboxFullException(
              "outbox "
                  + dir
                  + " is full ("
                  + (after - size)
                  + " of "
                  + maxBytes
                  + " bytes used, "
                  + size
                  + " more needed)"));
    }
    CompletableFuture<Void> done = new CompletableFuture<>();
    Pending p = new Pending(frames, size, done);
    queue.add(p);
    if (closed && queue.remove(p)) {
      // raced with close(): the writer may be gone; nothing of it was written
      reserved.addAndGet(-size);
      done.completeExceptionally(new OutboxFullException("outbox is closed"));
    }
    return done;
  }

  static byte[] frame(byte[] payload) {
    CRC32C crc = new CRC32C();
    crc.update(payload);
    ByteBuffer b = ByteBuffer.allocate(HEADER + payload.length);
    b.putInt(MAGIC).putInt(payload.length).putInt((int) crc.getValue()).put(payload);
    return b.array();
  }

  private void writeLoop() {
    List<Pending> batch = new ArrayList<>();
    while (!closed || !queue.isEmpty()) {
      try {
        Pending first = queue.poll(100, java.util.concurrent.TimeUnit.MILLISECONDS);
        if (first == null) {
          continue;
        }
        batch.add(first);
        queue.drainTo(batch);
        writeBatch(batch);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return;
      } finally {
        batch.clear();
      }
    }
  }

  private void writeBatch(List<Pending> batch) {
    writeLock.lock();
    int released = 0; // pendings whose reservation moved to onDisk
    try {
      for (Pending p : batch) {
        if (active == null || activeSize >= segmentBytes) {
          rollLocked();
        }
        for (byte[] f : p.frames()) {
          ByteBuffer buf = ByteBuffer.wrap(f);
          while (buf.hasRemaining()) {
            int n = active.write(buf);
            activeSize += n;
            onDisk.addAndGet(n);
          }
        }
        reserved.addAndGet(-p.size());
        released++;
      }
      active.force(false);
      lastWriteFailure = null;
      for (Pending p : batch) {
        appended.addAndGet(p.frames().size());
        p.done().complete(null);
      }
    } catch (IOException | RuntimeException e) {
      log.error("outbox write to {} failed; {} appends refused", activePath, batch.size(), e);
      lastWriteFailure = e.toString();
      for (int i = released; i < batch.size(); i++) {
        reserved.addAndGet(-batch.get(i).size());
      }
      for (Pending p : batch) {
        // Frames of these appends that reached the file may still be replayed: a refused record
        // can land later, never twice (the ledger is idempotent), and never as garbage.
        p.done().completeExceptionally(new OutboxFullException("outbox write failed: " + e, e));
      }
      // Start over in a fresh segment: the failed one may hold a partial frame (a torn tail
      // that replay will detect and drop).
      closeActiveQuietly();
    } finally {
      writeLock.unlock();
    }
  }

  private void rollLocked() throws IOException {
    if (active != null) {
      active.force(false); // appends in the sealed segment are acknowledged with this batch
    }
    closeActiveQuietly();
    activePath = dir.resolve(String.format("segment-%020d.log", nextSegment++));
    active =
        FileChannel.open(
            activePath,
            StandardOpenOption.CREATE_NEW,
            StandardOpenOption.WRITE,
            StandardOpenOption.APPEND);
    activeSize = 0;
    // make the new file's name durable too
    try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
      d.force(true);
    } catch (IOException ignored) {
      // some file systems cannot fsync a directory; the data fsync still holds
    }
  }

  private void closeActiveQuietly() {
    if (active != null) {
      try {
        active.close();
      } catch (IOException e) {
        log.warn("closing outbox segment {} failed", activePath, e);
      }
      active = null;
    }
  }

  /**
   * Replays every sealed segment in order through {@code committer}, in chunks of at most {@code
   * chunk} records, deleting each segment once all its records were committed. Stops at the first
   * failed commit (the segment stays for the next replay). Safe to call while appends continue.
   */
  public ReplayReport replay(Committer committer, int chunk) {
    return replay(
        committer,
        b -> {
          throw new IllegalStateException("no committer for measured batch " + b.batchId());
        },
        chunk);
  }

  /**
   * Like {@link #replay(Committer, int)}; the measured batches of a segment are committed through
   * {@code measuredCommitter} after its records.
   */
  public ReplayReport replay(Committer committer, MeasuredCommitter measuredCommitter, int chunk) {
    writeLock.lock();
    try {
      if (active != null && activeSize > 0) {
        closeActiveQuietly(); // seal: the next append opens a new segment
      }
    } finally {
      writeLock.unlock();
    }
    int done = 0;
    long records = 0;
    long corruptBefore = corruptFrames.get();
    long tornBefore = tornTails.get();
    List<Path> sealed;
    try {
      sealed = segments();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    for (Path seg : sealed) {
      if (seg.equals(activeSegmentPath())) {
        continue;
      }
      SegmentReader.Result read;
      long size;
      try {
        size = Files.size(seg);
        read = SegmentReader.read(Files.readAllBytes(seg));
      } catch (IOException e) {
        log.error("cannot read outbox segment {}", seg, e);
        return new ReplayReport(
            done,
            records,
            corruptFrames.get() - corruptBefore,
            tornTails.get() - tornBefore,
            false);
      }
      if (read.corruptFrames() > 0 || read.tornTailBytes() > 0) {
        log.warn(
            "outbox segment {} is damaged: {} corrupt region(s), torn tail of {} bytes; {} intact records will be replayed",
            seg,
            read.corruptFrames(),
            read.tornTailBytes(),
            read.records().size());
      }
      List<UsageRecord> recs = read.records();
      try {
        for (int i = 0; i < recs.size(); i += chunk) {
          committer.commit(recs.subList(i, Math.min(recs.size(), i + chunk)));
        }
        for (MeasuredBatch b : read.measured()) {
          measuredCommitter.commit(b);
        }
      } catch (Exception e) {
        log.warn("replay of outbox segment {} stopped: {}", seg, e.toString());
        return new ReplayReport(
            done,
            records,
            corruptFrames.get() - corruptBefore,
            tornTails.get() - tornBefore,
            false);
      }
      corruptFrames.addAndGet(read.corruptFrames());
      if (read.tornTailBytes() > 0) {
        tornTails.incrementAndGet();
      }
      try {
        if (read.corruptFrames() > 0 || read.tornTailBytes() > 0) {
          Path q = Files.createDirectories(dir.resolve(QUARANTINE_DIR));
          Files.move(seg, q.resolve(seg.getFileName()), StandardCopyOption.REPLACE_EXISTING);
          quarantinedSegments.incrementAndGet();
          quarantinedRecords.addAndGet(recs.size());
        } else {
          Files.delete(seg);
        }
      } catch (IOException e) {
        log.error("cannot remove replayed outbox segment {}", seg, e);
        return new ReplayReport(
            done,
            records,
            corruptFrames.get() - corruptBefore,
            tornTails.get() - tornBefore,
            false);
      }
      onDisk.addAndGet(-size);
      records += recs.size();
      done++;
    }
    return new ReplayReport(
        done, records, corruptFrames.get() - corruptBefore, tornTails.get() - tornBefore, true);
  }

  /**
   * Sets aside a record that cannot be committed (the database refuses it): appends it, fsynced, to
   * {@code dead-letter.log} in the outbox directory, in the segment frame format, for an operator
   * to inspect and replay by hand.
   *
   * @throws UncheckedIOException if it cannot be written
   */
  public synchronized void deadLetter(UsageRecord record, String reason) {
    try (FileChannel ch =
        FileChannel.open(
            dir.resolve(DEAD_LETTER_FILE),
            StandardOpenOption.CREATE,
            StandardOpenOption.WRITE,
            StandardOpenOption.APPEND)) {
      ByteBuffer buf = ByteBuffer.wrap(frame(UsageRecordCodec.encode(record)));
      while (buf.hasRemaining()) {
        ch.write(buf);
      }
      ch.force(false);
    } catch (IOException e) {
      throw new UncheckedIOException("cannot write " + dir.resolve(DEAD_LETTER_FILE), e);
    }
    deadLettered.incrementAndGet();
    deadLettersWaiting.incrementAndGet();
    log.error(
        "usage record {} set aside in {}: {}",
        record.requestId(),
        dir.resolve(DEAD_LETTER_FILE),
        reason);
  }

  /**
   * Re-applies the records set aside: the intact records (and measured batches) of every segment in
   * {@code quarantine/}, then every entry of {@code dead-letter.log}, one record at a time through
   * {@code applier} (idempotent on the request id, so re-applying is safe and a second run finds
   * them already present). A quarantined segment whose records were all applied or already present
   * moves to {@code quarantine/replayed/} (kept for inspection of its damage); {@code
   * dead-letter.log} is rewritten (write, fsync, rename) with only the entries refused again. Stops
   * at the first failure of the database (the rest stays set aside).
   *
   * @throws Exception what {@code applier} or {@code measuredCommitter} threw
   */
  public synchronized SetAsideReport replaySetAside(
      RecordApplier applier, MeasuredCommitter measuredCommitter) throws Exception {
    long[] counts = new long[3];
    int cleared = 0;
    int left = 0;
    for (Path seg : quarantined()) {
      SegmentReader.Result read = SegmentReader.read(Files.readAllBytes(seg));
      long refusedHere = applyAll(read.records(), applier, counts, null);
      for (MeasuredBatch b : read.measured()) {
        measuredCommitter.commit(b);
      }
      if (refusedHere == 0) {
        Path done = Files.createDirectories(dir.resolve(QUARANTINE_DIR).resolve(REPLAYED_DIR));
        Files.move(seg, done.resolve(seg.getFileName()), StandardCopyOption.REPLACE_EXISTING);
        quarantinedSegments.decrementAndGet();
        quarantinedRecords.addAndGet(-read.records().size());
        cleared++;
      } else {
        left++;
      }
    }
    Path dl = dir.resolve(DEAD_LETTER_FILE);
    long deadLeft = 0;
    if (Files.exists(dl)) {
      List<UsageRecord> entries = SegmentReader.read(Files.readAllBytes(dl)).records();
      List<UsageRecord> refused = new ArrayList<>();
      applyAll(entries, applier, counts, refused);
      Path tmp = dir.resolve(DEAD_LETTER_FILE + ".tmp");
      try (FileChannel ch =
          FileChannel.open(
              tmp,
              StandardOpenOption.CREATE,
              StandardOpenOption.WRITE,
              StandardOpenOption.TRUNCATE_EXISTING)) {
        for (UsageRecord r : refused) {
          ByteBuffer buf = ByteBuffer.wrap(frame(UsageRecordCodec.encode(r)));
          while (buf.hasRemaining()) {
            ch.write(buf);
          }
        }
        ch.force(false);
      }
      Files.move(tmp, dl, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
      try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
        d.force(true);
      } catch (IOException ignored) {
        // some file systems cannot fsync a directory; the rename is still atomic
      }
      deadLeft = refused.size();
      deadLettersWaiting.set(deadLeft);
    }
    return new SetAsideReport(counts[0], counts[1], counts[2], cleared, left, deadLeft);
  }

  /** Applies each record; counts [applied, present, refused]; returns how many were refused. */
  private static long applyAll(
      List<UsageRecord> records, RecordApplier applier, long[] counts, List<UsageRecord> refused)
      throws Exception {
    long n = 0;
    for (UsageRecord r : records) {
      Outcome o = applier.apply(r);
      int slot =
          switch (o) {
            case APPLIED -> 0;
            case ALREADY_PRESENT -> 1;
            case REFUSED -> 2;
          };
      counts[slot]++;
      if (o == Outcome.REFUSED) {
        n++;
        if (refused != null) {
          refused.add(r);
        }
      }
    }
    return n;
  }

  private Path activeSegmentPath() {
    writeLock.lock();
    try {
      return active == null ? null : activePath;
    } finally {
      writeLock.unlock();
    }
  }

  private List<Path> segments() throws IOException {
    try (Stream<Path> s = Files.list(dir)) {
      return s.filter(p -> p.getFileName().toString().matches("segment-\\d{20}\\.log"))
          .sorted()
          .toList();
    }
  }

  private static long segmentNumber(Path p) {
    String n = p.getFileName().toString();
    return Long.parseLong(n.substring("segment-".length(), n.length() - ".log".length()));
  }

  /** Flushes queued appends, then stops the writer and releases the directory. Idempotent. */
  @Override
  public void close() {
    if (closed && !lock.isValid()) {
      return;
    }
    closed = true;
    try {
      writer.join(10_000);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    writeLock.lock();
    try {
      closeActiveQuietly();
    } finally {
      writeLock.unlock();
    }
    Pending p;
    while ((p = queue.poll()) != null) {
      reserved.addAndGet(-p.size());
      p.done().completeExceptionally(new OutboxFullException("outbox closed"));
    }
    try {
      lock.release();
      lockChannel.close();
    } catch (IOException e) {
      log.warn("releasing the outbox lock in {} failed", dir, e);
    }
  }
}
