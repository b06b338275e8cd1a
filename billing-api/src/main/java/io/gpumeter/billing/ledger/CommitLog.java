package io.gpumeter.billing.ledger;

import io.gpumeter.metering.UsageRecord;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;

/**
 * A local checksummed log meant as a commit point for charges: a group of records is durable once
 * its frames are written into a <b>preallocated</b> segment and the segment is {@code fdatasync}ed
 * ({@link FileChannel#force(boolean) force(false)}). Overwriting preallocated blocks changes no
 * file metadata, so the sync flushes only the data blocks: 0.25 ms p50 on this VM's disk against
 * 0.52 ms for the outbox's growing append ({@code benchmarks/results/fsync-probe.txt}).
 *
 * <p><b>Format:</b> the outbox's frames ({@link Outbox#frame}: magic, length, CRC32C, payload; a
 * payload is a {@link UsageRecordCodec} record or a {@link MeasuredBatch}), back to back from the
 * start of a segment file {@code commit-NNNNNNNNNN.log}; the rest of the segment is zeros. A
 * segment is created at its full size and filled with zeros, and the fill is synced before the
 * first commit into it, so a later sync never has to extend the file.
 *
 * <p><b>Group commit:</b> {@link #commit} may be called from any number of threads. The caller that
 * finds no sync in flight becomes the leader: it takes every group queued so far, writes them in
 * one {@code write}, syncs once, and completes them all; groups queued while its sync is in flight
 * form the next group, which it (or the next caller) writes next. An idle log therefore syncs a
 * lone group at once (no linger), and under load one sync covers many groups.
 *
 * <p><b>Recovery:</b> {@link #open} reads every segment left in the directory. Frames are read in
 * order up to the first zero header (the end of the log). A frame whose checksum fails, or that
 * runs past the end, is a <i>torn tail</i> when no intact frame follows it (a commit that was
 * interrupted: it was never acknowledged) and <i>corrupt</i> when one does (damage inside the log:
 * counted, skipped). {@link #unshipped()} returns what the segments hold; shipping them to
 * PostgreSQL is idempotent (claims by request id, measured batches by batch id), so a segment
 * shipped again after a crash stores nothing twice. {@link #shipped} drops whole segments that are
 * no longer written to.
 *
 * <p><b>The next segment is made ahead of time:</b> once a segment is taken into use, a background
 * thread creates, zero-fills and syncs the next one, so the commit that fills a segment normally
 * finds its successor ready instead of paying the fill and two syncs itself. A prepared segment
 * that a crash leaves unused is all zeros: empty to a reader.
 *
 * <p><b>Size:</b> {@link #bytesOnDisk()} counts the segments in the directory (prepared one
 * included) at their preallocated size; a caller bounds the log with it (cheap: one volatile read).
 *
 * <p><b>Concurrency:</b> {@code lock} guards the queue and the in-flight flag; the file is written
 * only by the leader, outside the lock.
 */
public final class CommitLog implements AutoCloseable {
  private static final String PREFIX = "commit-";
  private static final String SUFFIX = ".log";

  private final Path dir;
  private final long segmentBytes;
  private final Object lock = new Object();
  private final AtomicLong syncs = new AtomicLong();
  private final AtomicLong committedGroups = new AtomicLong();
  private final AtomicInteger segmentsOnDisk = new AtomicInteger();
  private final AtomicLong preparedAhead = new AtomicLong();
  private final ExecutorService preparer =
      Executors.newSingleThreadExecutor(
          r -> {
            Thread t = new Thread(r, "gpumeter-commit-log-preallocate");
            t.setDaemon(true);
            return t;
          });

  // guarded by lock; the leader takes queued whole and leaves free (its last list, cleared) there
  private List<Group> queued = new ArrayList<>();
  private List<Group> free = new ArrayList<>();
  private boolean syncing;
  private boolean closed;

  // written only by the leader (one at a time, ordered by syncing)
  private FileChannel active;
  private long activeNumber;
  private long position;
  // the leader's write buffer, reused (grown when a group needs more)
  private ByteBuffer writeBuffer = ByteBuffer.allocateDirect(64 * 1024);
  // the next segment, being prepared or ready (number activeNumber + 1), or null
  private CompletableFuture<FileChannel> spare;

  private final List<UsageRecord> recoveredRecords;
  private final List<MeasuredBatch> recoveredMeasured;
  private final int corruptFrames;
  private final int tornTails;

  private record Group(byte[] bytes, CompletableFuture<Long> done) {}

  private CommitLog(Path dir, long segmentBytes) throws IOException {
    this.dir = dir;
    this.segmentBytes = segmentBytes;
    Files.createDirectories(dir);
    List<UsageRecord> records = new ArrayList<>();
    List<MeasuredBatch> measured = new ArrayList<>();
    int corrupt = 0;
    int torn = 0;
    long last = 0;
    for (Path p : segments()) {
      Scan s = scan(Files.readAllBytes(p));
      if (s.records.isEmpty() && s.measured.isEmpty() && s.corrupt == 0 && !s.tornTail) {
        Files.delete(p); // all zeros: one prepared ahead and never used, or never written
        continue;
      }
      records.addAll(s.records);
      measured.addAll(s.measured);
      corrupt += s.corrupt;
      torn += s.tornTail ? 1 : 0;
      last = Math.max(last, number(p));
      segmentsOnDisk.incrementAndGet();
    }
    this.recoveredRecords = List.copyOf(records);
    this.recoveredMeasured = List.copyOf(measured);
    this.corruptFrames = corrupt;
    this.tornTails = torn;
    // never append after a recovered tail: the next commit goes to a fresh segment
    this.activeNumber = last;
  }

  /**
   * Opens (creating if needed) the log in {@code dir}, reading what earlier processes left there.
   *
   * @param segmentBytes the preallocated size of each segment; a group larger than this is refused
   * @throws UncheckedIOException if the directory cannot be read
   */
  public static CommitLog open(Path dir, long segmentBytes) {
    if (segmentBytes < 4096) {
      throw new IllegalArgumentException("segmentBytes must be at least 4096, got " + segmentBytes);
    }
    try {
      return new CommitLog(dir, segmentBytes);
    } catch (IOException e) {
      throw new UncheckedIOException("cannot open the commit log in " + dir, e);
    }
  }

  /**
   * Makes {@code records} (and {@code measured}, which may be null) durable together: the returned
   * future completes, with the number of the segment that holds them, once they are synced, or
   * fails if they could not be (nothing of a failed group is acknowledged; its frames, if partly
   * written, are a torn or corrupt tail that a reader skips).
   */
  public CompletableFuture<Long> commit(List<UsageRecord> records, MeasuredBatch measured) {
    byte[] bytes = encode(records, measured);
    CompletableFuture<Long> done = new CompletableFuture<>();
    if (bytes.length > segmentBytes) {
      done.completeExceptionally(
          new IllegalArgumentException(
              "a group of " + bytes.length + " bytes does not fit a segment of " + segmentBytes));
      return done;
    }
    List<Group> mine;
    synchronized (lock) {
      if (closed) {
        done.completeExceptionally(new IllegalStateException("commit log closed"));
        return done;
      }
      queued.add(new Group(bytes, done));
      if (syncing) {
        return done; // the leader in flight takes it with the next group
      }
      syncing = true;
      mine = takeQueued();
    }
    while (true) {
      writeAndSync(mine);
      mine.clear();
      synchronized (lock) {
        free = mine;
        if (queued.isEmpty()) {
          syncing = false;
          lock.notifyAll();
          return done;
        }
        mine = takeQueued();
      }
    }
  }

  /** The groups queued so far, for the leader; their list is replaced by the free one. */
  private List<Group> takeQueued() {
    List<Group> mine = queued;
    queued = free;
    free = null; // the leader gives its list back when it is done with it
    return mine;
  }

  private void writeAndSync(List<Group> groups) {
    int total = 0;
    for (Group g : groups) {
      total += g.bytes.length;
    }
    try {
      if (total > segmentBytes && groups.size() > 1) {
        // several groups together larger than a segment: one at a time (each one fits)
        for (Group g : groups) {
          writeAndSync(List.of(g));
        }
        return;
      }
      if (active == null || position + total > segmentBytes) {
        roll();
      }
      if (writeBuffer.capacity() < total) {
        writeBuffer =
            ByteBuffer.allocateDirect(
                (int) Math.min(segmentBytes, Math.max(total, 2L * writeBuffer.capacity())));
      }
      ByteBuffer buf = writeBuffer;
      buf.clear();
      for (Group g : groups) {
        buf.put(g.bytes);
      }
      buf.flip();
      long at = position;
      while (buf.hasRemaining()) {
        at += active.write(buf, at);
      }
      active.force(false);
      position = at;
      syncs.incrementAndGet();
      committedGroups.addAndGet(groups.size());
      for (Group g : groups) {
        g.done.complete(activeNumber);
      }
    } catch (IOException | RuntimeException e) {
      closeActiveQuietly(); // the next commit starts a fresh segment after a failure
      for (Group g : groups) {
        g.done.completeExceptionally(e);
      }
    }
  }

  /**
   * Moves to the next segment: the one prepared ahead of time when it is there (waiting for it if
   * it is still being filled), else one made now; then has the one after it prepared.
   */
  private void roll() throws IOException {
    closeActiveQuietly();
    long next = activeNumber + 1;
    FileChannel ch = null;
    if (spare != null) {
      CompletableFuture<FileChannel> s = spare;
      spare = null;
      try {
        ch = s.join();
        preparedAhead.incrementAndGet();
      } catch (RuntimeException e) {
        ch = null; // preparing failed (and removed its file): make it here
      }
    }
    if (ch == null) {
      ch = create(next);
    }
    active = ch;
    activeNumber = next;
    position = 0;
    long after = next + 1;
    try {
      spare = CompletableFuture.supplyAsync(() -> prepare(after), preparer);
    } catch (RuntimeException e) {
      spare = null; // closed: nothing more is prepared
    }
  }

  private FileChannel prepare(long number) {
    try {
      return create(number);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** A new segment, created at full size, zero-filled and synced (file and directory). */
  private FileChannel create(long number) throws IOException {
    Path p = dir.resolve(String.format("%s%010d%s", PREFIX, number, SUFFIX));
    FileChannel ch =
        FileChannel.open(
            p, StandardOpenOption.CREATE_NEW, StandardOpenOption.READ, StandardOpenOption.WRITE);
    segmentsOnDisk.incrementAndGet();
    try {
      ByteBuffer zeros = ByteBuffer.allocate((int) Math.min(segmentBytes, 1 << 20));
      long at = 0;
      while (at < segmentBytes) {
        zeros.clear();
        zeros.limit((int) Math.min(zeros.capacity(), segmentBytes - at));
        at += ch.write(zeros, at);
      }
      ch.force(true);
      try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
        d.force(true);
      } catch (IOException e) {
        // some file systems cannot sync a directory; the file's own sync still holds its data
      }
    } catch (IOException e) {
      ch.close();
      Files.deleteIfExists(p);
      segmentsOnDisk.decrementAndGet();
      throw e;
    }
    return ch;
  }

  private void closeActiveQuietly() {
    if (active != null) {
      try {
        active.close();
      } catch (IOException e) {
        // closing after a failure: nothing more to do
      }
      active = null;
    }
  }

  private static byte[] encode(List<UsageRecord> records, MeasuredBatch measured) {
    List<byte[]> frames = new ArrayList<>(records.size() + 1);
    int total = 0;
    for (UsageRecord r : records) {
      byte[] f = Outbox.frame(UsageRecordCodec.encode(r));
      frames.add(f);
      total += f.length;
    }
    if (measured != null) {
      byte[] f = Outbox.frame(measured.encode());
      frames.add(f);
      total += f.length;
    }
    byte[] out = new byte[total];
    int at = 0;
    for (byte[] f : frames) {
      System.arraycopy(f, 0, out, at, f.length);
      at += f.length;
    }
    return out;
  }

  /** The records found in the segments at {@link #open}, in log order. */
  public List<UsageRecord> unshipped() {
    return recoveredRecords;
  }

  /** The measured batches found in the segments at {@link #open}, in log order. */
  public List<MeasuredBatch> unshippedMeasured() {
    return recoveredMeasured;
  }

  /** Frames skipped at {@link #open} because they were damaged and intact frames followed. */
  public int corruptFrames() {
    return corruptFrames;
  }

  /** Segments that ended, at {@link #open}, in an interrupted (never acknowledged) write. */
  public int tornTails() {
    return tornTails;
  }

  /** How many syncs have made groups durable since {@link #open}. */
  public long syncs() {
    return syncs.get();
  }

  /** The segments in the directory (the prepared next one included) at their full size. */
  public long bytesOnDisk() {
    return segmentsOnDisk.get() * segmentBytes;
  }

  /** Waits until the segment being prepared ahead of time, if any, is ready (for tests). */
  void awaitPreparedAhead() throws InterruptedException {
    CompletableFuture<FileChannel> s;
    synchronized (lock) {
      while (syncing) {
        lock.wait();
      }
      s = spare;
    }
    if (s != null) {
      s.exceptionally(e -> null).join();
    }
  }

  /** The preallocated size of a segment. */
  public long segmentBytes() {
    return segmentBytes;
  }

  /** How many times a full segment was followed by one prepared ahead of time. */
  public long segmentsPreparedAhead() {
    return preparedAhead.get();
  }

  /** How many groups ({@link #commit} calls) have been made durable since {@link #open}. */
  public long committedGroups() {
    return committedGroups.get();
  }

  /**
   * Deletes every segment numbered {@code upTo} or lower that is no longer being written: their
   * contents are stored elsewhere (shipped). The segment in use is kept even when {@code upTo}
   * names it, and so is the next one prepared ahead of time.
   */
  public void shipped(long upTo) throws IOException {
    long inUse;
    synchronized (lock) {
      while (syncing) {
        try {
          lock.wait();
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          throw new IOException("interrupted while waiting for a sync", e);
        }
      }
      inUse = active == null ? -1 : activeNumber;
      for (Path p : segments()) {
        long n = number(p);
        if (n <= upTo && n != inUse && !(spare != null && n == activeNumber + 1)) {
          Files.delete(p);
          segmentsOnDisk.decrementAndGet();
        }
      }
    }
  }

  /** The segment files now in the directory, oldest first. */
  List<Path> segments() throws IOException {
    try (Stream<Path> s = Files.list(dir)) {
      return s.filter(
              p -> {
                String n = p.getFileName().toString();
                return n.startsWith(PREFIX) && n.endsWith(SUFFIX);
              })
          .sorted()
          .toList();
    }
  }

  private static long number(Path p) {
    String n = p.getFileName().toString();
    return Long.parseLong(n.substring(PREFIX.length(), n.length() - SUFFIX.length()));
  }

  @Override
  public void close() {
    synchronized (lock) {
      closed = true;
      while (syncing) {
        try {
          lock.wait();
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          break;
        }
      }
      for (Group g : queued) {
        g.done.completeExceptionally(new IllegalStateException("commit log closed"));
      }
      queued.clear();
      closeActiveQuietly();
    }
    preparer.shutdown();
    CompletableFuture<FileChannel> s = spare;
    spare = null;
    if (s != null) {
      try {
        s.join().close(); // left on disk, all zeros: an empty segment to the next reader
      } catch (IOException | RuntimeException e) {
        // preparing failed or the file could not be closed: nothing to keep
      }
    }
  }

  record Scan(
      List<UsageRecord> records, List<MeasuredBatch> measured, int corrupt, boolean tornTail) {}

  /**
   * Reads one segment's frames: in order to the first zero header; damage followed by an intact
   * frame is corrupt (skipped), damage with nothing intact after it is a torn tail.
   */
  static Scan scan(byte[] data) {
    ByteBuffer b = ByteBuffer.wrap(data);
    List<UsageRecord> records = new ArrayList<>();
    List<MeasuredBatch> measured = new ArrayList<>();
    int corrupt = 0;
    boolean torn = false;
    int pos = 0;
    while (pos + Outbox.HEADER <= data.length) {
      int magic = b.getInt(pos);
      int len = b.getInt(pos + 4);
      if (magic == 0 && len == 0 && b.getInt(pos + 8) == 0) {
        break; // the zero-filled rest of the segment
      }
      if (intact(data, b, pos) && decode(data, pos, len, records, measured)) {
        pos += Outbox.HEADER + len;
        continue;
      }
      int next = nextIntact(data, b, pos + 1);
      if (next < 0) {
        torn = true;
        break;
      }
      corrupt++;
      pos = next;
    }
    return new Scan(records, measured, corrupt, torn);
  }

  private static boolean intact(byte[] data, ByteBuffer b, int pos) {
    if (b.getInt(pos) != Outbox.MAGIC) {
      return false;
    }
    int len = b.getInt(pos + 4);
    if (len <= 0 || len > Outbox.MAX_FRAME || pos + Outbox.HEADER + len > data.length) {
      return false;
    }
    java.util.zip.CRC32C crc = new java.util.zip.CRC32C();
    crc.update(data, pos + Outbox.HEADER, len);
    return (int) crc.getValue() == b.getInt(pos + 8);
  }

  private static boolean decode(
      byte[] data, int pos, int len, List<UsageRecord> records, List<MeasuredBatch> measured) {
    byte[] payload = Arrays.copyOfRange(data, pos + Outbox.HEADER, pos + Outbox.HEADER + len);
    try {
      if (payload[0] == MeasuredBatch.TYPE) {
        measured.add(MeasuredBatch.decode(payload));
      } else {
        records.add(UsageRecordCodec.decode(payload));
      }
      return true;
    } catch (IOException e) {
      return false; // checksum held but not a record: damage
    }
  }

  private static int nextIntact(byte[] data, ByteBuffer b, int from) {
    for (int p = from; p + Outbox.HEADER <= data.length; p++) {
      if (b.getInt(p) == Outbox.MAGIC && intact(data, b, p)) {
        return p;
      }
    }
    return -1;
  }
}
