package io.gpumeter.billing.ledger;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class OutboxTest {
  @TempDir Path dir;

  static UsageRecord record(int i) {
    Instant t = Instant.parse("2026-11-27T10:00:00.123456789Z").plusSeconds(i);
    return new UsageRecord(
        "req-" + i,
        7,
        3,
        "demo-byte-lm",
        new TimerInfo("cuda-event", "cuda:0", "NVIDIA H100", "GPU-1", "13.0", "12.6"),
        "linear(p=1,d=1,c=0)",
        1000L + i,
        400,
        600L + i,
        12,
        5,
        77,
        6,
        UsageStatus.values()[i % 4],
        t,
        t.plusMillis(5));
  }

  private static List<UsageRecord> records(int from, int to) {
    List<UsageRecord> out = new ArrayList<>();
    for (int i = from; i < to; i++) {
      out.add(record(i));
    }
    return out;
  }

  private static List<Path> segments(Path dir) throws Exception {
    try (Stream<Path> s = Files.list(dir)) {
      return s.filter(p -> p.getFileName().toString().startsWith("segment-")).sorted().toList();
    }
  }

  private static long offsetOf(int index) {
    long off = 0;
    for (int i = 0; i < index; i++) {
      off += Outbox.frame(UsageRecordCodec.encode(record(i))).length;
    }
    return off;
  }

  @Test
  void codecRoundTripsEveryField() throws Exception {
    for (int i = 0; i < 4; i++) {
      assertThat(UsageRecordCodec.decode(UsageRecordCodec.encode(record(i)))).isEqualTo(record(i));
    }
  }

  @Test
  void appendedRecordsSurviveReopenAndReplayInOrderThenSegmentsAreDeleted() throws Exception {
    try (Outbox box = Outbox.open(dir, 1 << 20, 4096)) {
      List<CompletableFuture<Void>> fs = new ArrayList<>();
      for (int i = 0; i < 100; i += 10) {
        fs.add(box.append(records(i, i + 10)));
      }
      for (CompletableFuture<Void> f : fs) {
        f.get(10, TimeUnit.SECONDS);
      }
    }
    assertThat(segments(dir).size()).isGreaterThan(1);
    List<UsageRecord> replayed = new ArrayList<>();
    try (Outbox box = Outbox.open(dir, 1 << 20, 4096)) {
      assertThat(box.isEmpty()).isFalse();
      Outbox.ReplayReport report = box.replay(replayed::addAll, 7);
      assertThat(report.complete()).isTrue();
      assertThat(report.records()).isEqualTo(100);
      assertThat(box.isEmpty()).isTrue();
    }
    assertThat(replayed).containsExactlyElementsOf(records(0, 100));
    assertThat(segments(dir)).isEmpty();
  }

  @Test
  void aFailedCommitKeepsTheSegmentForTheNextReplay() throws Exception {
    try (Outbox box = Outbox.open(dir, 1 << 20, 1 << 20)) {
      box.append(records(0, 20)).get(10, TimeUnit.SECONDS);
      Outbox.ReplayReport failed =
          box.replay(
              rs -> {
                throw new java.sql.SQLException("database down");
              },
              5);
      assertThat(failed.complete()).isFalse();
      assertThat(box.isEmpty()).isFalse();
      List<UsageRecord> replayed = new ArrayList<>();
      assertThat(box.replay(replayed::addAll, 5).complete()).isTrue();
      assertThat(replayed).containsExactlyElementsOf(records(0, 20));
    }
  }

  @Test
  void aCorruptedFrameIsReportedAndTheIntactRecordsAroundItAreReplayed() throws Exception {
    try (Outbox box = Outbox.open(dir, 1 << 20, 1 << 20)) {
      for (int i = 0; i < 10; i++) {
        box.append(List.of(record(i))).get(10, TimeUnit.SECONDS);
      }
    }
    Path seg = segments(dir).get(0);
    try (RandomAccessFile f = new RandomAccessFile(seg.toFile(), "rw")) {
      // flip a payload byte of record 3 and the magic of record 6
      f.seek(offsetOf(3) + Outbox.HEADER + 5);
      f.write(f.readByte() ^ 0x5A);
      f.seek(offsetOf(6));
      f.write(0);
    }
    List<UsageRecord> replayed = new ArrayList<>();
    try (Outbox box = Outbox.open(dir, 1 << 20, 1 << 20)) {
      Outbox.ReplayReport report = box.replay(replayed::addAll, 100);
      assertThat(report.corruptFrames()).isEqualTo(2);
      assertThat(report.tornTails()).isZero();
      assertThat(box.corruptFrames()).isEqualTo(2);
    }
    assertThat(replayed)
        .extracting(UsageRecord::requestId)
        .containsExactly("req-0", "req-1", "req-2", "req-4", "req-5", "req-7", "req-8", "req-9");
    assertThat(Files.list(dir.resolve("quarantine")).count()).isEqualTo(1);
  }

  @Test
  void aTornTailIsDetectedAndNeverReplayedAsGarbage() throws Exception {
    try (Outbox box = Outbox.open(dir, 1 << 20, 1 << 20)) {
      box.append(records(0, 5)).get(10, TimeUnit.SECONDS);
    }
    Path seg = segments(dir).get(0);
    long size = Files.size(seg);
    try (RandomAccessFile f = new RandomAccessFile(seg.toFile(), "rw")) {
      f.setLength(size - 9); // the crash cut the last frame
    }
    List<UsageRecord> replayed = new ArrayList<>();
    try (Outbox box = Outbox.open(dir, 1 << 20, 1 << 20)) {
      // new appends after the crash go to a fresh segment
      box.append(records(5, 7)).get(10, TimeUnit.SECONDS);
      Outbox.ReplayReport report = box.replay(replayed::addAll, 100);
      assertThat(report.tornTails()).isEqualTo(1);
      assertThat(report.corruptFrames()).isZero();
    }
    assertThat(replayed)
        .extracting(UsageRecord::requestId)
        .containsExactly("req-0", "req-1", "req-2", "req-3", "req-5", "req-6");
  }

  @Test
  void aFullOutboxRefusesAppendsAndKeepsWhatItHas() throws Exception {
    try (Outbox box = Outbox.open(dir, offsetOf(3) + 10, 1 << 20)) {
      box.append(records(0, 3)).get(10, TimeUnit.SECONDS);
      CompletableFuture<Void> refused = box.append(records(3, 4));
      assertThat(refused).isCompletedExceptionally();
      try {
        refused.get();
      } catch (ExecutionException e) {
        assertThat(e.getCause())
            .isInstanceOf(OutboxFullException.class)
            .hasMessageContaining("full");
      }
      List<UsageRecord> replayed = new ArrayList<>();
      box.replay(replayed::addAll, 100);
      assertThat(replayed).hasSize(3);
      // space is freed by replay
      box.append(records(3, 4)).get(10, TimeUnit.SECONDS);
    }
  }
}
