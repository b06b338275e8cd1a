package io.gpumeter.billing.ledger;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.MeasuredDelta;
import io.gpumeter.metering.UsageRecord;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CommitLogTest {
  private static final long SEGMENT = 64 * 1024;

  @TempDir Path dir;

  private static List<UsageRecord> records(int from, int to) {
    List<UsageRecord> out = new ArrayList<>();
    for (int i = from; i < to; i++) {
      out.add(OutboxTest.record(i));
    }
    return out;
  }

  private static List<String> ids(List<UsageRecord> records) {
    return records.stream().map(UsageRecord::requestId).toList();
  }

  @Test
  void committedGroupsAndMeasuredTimeSurviveReopening() throws Exception {
    MeasuredBatch measured =
        MeasuredBatch.of(
            UUID.randomUUID(),
            UUID.randomUUID(),
            List.of(new MeasuredDelta(29_000_000L, "demo-byte-lm", "cuda:0", 900, 800, 100, 2)),
            records(0, 2));
    try (CommitLog log = CommitLog.open(dir, SEGMENT)) {
      assertThat(log.unshipped()).isEmpty();
      log.commit(records(0, 2), measured).get(10, TimeUnit.SECONDS);
      log.commit(records(2, 5), null).get(10, TimeUnit.SECONDS);
      assertThat(log.syncs()).isEqualTo(2);
    }
    // the segments are preallocated: their size did not follow the records; the second is the
    // one prepared ahead of time, empty (close waited for it)
    try (var files = Files.list(dir)) {
      assertThat(files.toList())
          .hasSize(2)
          .allSatisfy(p -> assertThat(Files.size(p)).isEqualTo(SEGMENT));
    }
    try (CommitLog log = CommitLog.open(dir, SEGMENT)) {
      assertThat(log.unshipped()).isEqualTo(records(0, 5));
      assertThat(log.unshippedMeasured()).containsExactly(measured);
      assertThat(log.tornTails()).isZero();
      assertThat(log.corruptFrames()).isZero();
      assertThat(log.segments()).as("the empty prepared segment is dropped at open").hasSize(1);
    }
  }

  @Test
  void groupsQueuedDuringASyncShareTheNextSync() throws Exception {
    int threads = 16;
    int perThread = 20;
    List<CompletableFuture<Long>> all = new ArrayList<>();
    try (CommitLog log = CommitLog.open(dir, 1 << 20)) {
      CountDownLatch start = new CountDownLatch(1);
      List<Thread> ts = new ArrayList<>();
      for (int t = 0; t < threads; t++) {
        int id = t;
        Thread th =
            new Thread(
                () -> {
                  try {
                    start.await();
                  } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                  }
                  for (int i = 0; i < perThread; i++) {
                    int n = id * perThread + i;
                    CompletableFuture<Long> f = log.commit(records(n, n + 1), null);
                    synchronized (all) {
                      all.add(f);
                    }
                    f.join(); // closed loop: the next one after this one is durable
                  }
                });
        ts.add(th);
        th.start();
      }
      start.countDown();
      for (Thread th : ts) {
        th.join(TimeUnit.SECONDS.toMillis(60));
        assertThat(th.isAlive()).as("a committer is stuck").isFalse();
      }
      assertThat(all).hasSize(threads * perThread).allSatisfy(f -> assertThat(f).isCompleted());
      assertThat(log.committedGroups()).isEqualTo(threads * perThread);
      // 16 committers in a closed loop: while one sync is in flight the others queue and share
      // the next one, so there are fewer syncs than groups
      assertThat(log.syncs()).isLessThan(log.committedGroups());
    }
    try (CommitLog log = CommitLog.open(dir, 1 << 20)) {
      assertThat(ids(log.unshipped()))
          .hasSize(threads * perThread)
          .containsExactlyInAnyOrderElementsOf(ids(records(0, threads * perThread)));
    }
  }

  @Test
  void aTornTailIsDroppedAndTheIntactFramesBeforeItKept() throws Exception {
    Path segment;
    try (CommitLog log = CommitLog.open(dir, SEGMENT)) {
      log.commit(records(0, 3), null).get(10, TimeUnit.SECONDS);
      log.commit(records(3, 4), null).get(10, TimeUnit.SECONDS);
      segment = log.segments().get(0);
    }
    // the last frame half-written: its second half is still the preallocated zeros
    int lastFrame = Outbox.frame(UsageRecordCodec.encode(OutboxTest.record(3))).length;
    long end = endOfFrames(segment);
    zero(segment, end - lastFrame / 2, lastFrame / 2);
    try (CommitLog log = CommitLog.open(dir, SEGMENT)) {
      assertThat(log.unshipped()).isEqualTo(records(0, 3));
      assertThat(log.tornTails()).isEqualTo(1);
      assertThat(log.corruptFrames()).isZero();
      // the next commit goes to a new segment, never after the torn tail
      long number = log.commit(records(10, 11), null).get(10, TimeUnit.SECONDS);
      assertThat(number).isEqualTo(2);
    }
    try (CommitLog log = CommitLog.open(dir, SEGMENT)) {
      assertThat(ids(log.unshipped())).containsExactly("req-0", "req-1", "req-2", "req-10");
    }
  }

  @Test
  void aDamagedFrameInsideTheLogIsCountedAndSkipped() throws Exception {
    Path segment;
    try (CommitLog log = CommitLog.open(dir, SEGMENT)) {
      log.commit(records(0, 3), null).get(10, TimeUnit.SECONDS);
      segment = log.segments().get(0);
    }
    int first = Outbox.frame(UsageRecordCodec.encode(OutboxTest.record(0))).length;
    // one bit of the second frame's payload flipped: its CRC32C no longer holds
    try (RandomAccessFile f = new RandomAccessFile(segment.toFile(), "rw")) {
      long at = first + Outbox.HEADER + 5;
      f.seek(at);
      int b = f.read();
      f.seek(at);
      f.write(b ^ 0x10);
    }
    try (CommitLog log = CommitLog.open(dir, SEGMENT)) {
      assertThat(ids(log.unshipped())).containsExactly("req-0", "req-2");
      assertThat(log.corruptFrames()).isEqualTo(1);
      assertThat(log.tornTails()).isZero();
    }
  }

  @Test
  void shippedSegmentsAreDroppedAndTheOneInUseKept() throws Exception {
    List<String> inThird = new ArrayList<>();
    try (CommitLog log = CommitLog.open(dir, 4096)) {
      // one record at a time until the third segment holds some: two full ones before it
      for (int i = 0; inThird.size() < 2; i++) {
        long segment = log.commit(records(i, i + 1), null).get(10, TimeUnit.SECONDS);
        assertThat(segment).isBetween(1L, 3L);
        if (segment == 3) {
          inThird.add("req-" + i);
        }
      }
      // the two full ones, the one in use and the next, prepared ahead of time
      log.awaitPreparedAhead();
      assertThat(log.segments()).hasSize(4);
      assertThat(log.segmentsPreparedAhead()).isEqualTo(2);
      assertThat(log.bytesOnDisk()).isEqualTo(4 * 4096L);
      log.shipped(3); // the third is being written to, the fourth prepared: both kept
      assertThat(log.segments()).hasSize(2);
      assertThat(log.bytesOnDisk()).isEqualTo(2 * 4096L);
    }
    try (CommitLog log = CommitLog.open(dir, 4096)) {
      assertThat(ids(log.unshipped())).isEqualTo(inThird);
      assertThat(log.commit(records(100, 101), null).get(10, TimeUnit.SECONDS)).isEqualTo(4);
    }
  }

  @Test
  void aGroupLargerThanASegmentIsRefusedAndNothingWritten() throws Exception {
    try (CommitLog log = CommitLog.open(dir, 4096)) {
      assertThatThrownBy(() -> log.commit(records(0, 200), null).get(10, TimeUnit.SECONDS))
          .hasCauseInstanceOf(IllegalArgumentException.class)
          .hasMessageContaining("does not fit a segment of 4096");
      assertThat(log.segments()).isEmpty();
    }
    assertThatThrownBy(() -> CommitLog.open(dir, 100))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("at least 4096, got 100");
  }

  /** The offset just past the last non-zero byte: where the frames end in a preallocated file. */
  private static long endOfFrames(Path segment) throws Exception {
    byte[] data = Files.readAllBytes(segment);
    int end = data.length;
    while (end > 0 && data[end - 1] == 0) {
      end--;
    }
    // the last frame's payload may end in zero bytes: round up to the frame boundary
    int pos = 0;
    java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(data);
    while (pos < end) {
      pos += Outbox.HEADER + b.getInt(pos + 4);
    }
    return pos;
  }

  private static void zero(Path file, long at, int length) throws Exception {
    try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
      f.seek(at);
      f.write(new byte[length]);
    }
  }
}
