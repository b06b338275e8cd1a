package io.gpumeter.billing.ledger;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.MeasuredDelta;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;
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
        t.plusMillis(5),
        i % 2 == 0 ? "req-" + i : "conversation-" + (i / 2),
        1_000_000_000_000L * i,
        4096L * i,
        // every third not measured, the others an exact sum over the steps
        i % 3 == 0 ? UsageRecord.NOT_MEASURED : 5L * i);
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
  void aVersionOneRecordDecodesWithItsRequestIdAsSessionAndNoKvMeasure() throws Exception {
    UsageRecord r = record(3);
    byte[] v2 = UsageRecordCodec.encode(r);
    // Version 1 is version 4 without the four trailing fields (session, kv byte-ns, peak kv,
    // batch company).
    int tail = 2 + r.sessionId().length() + 8 + 8 + 8;
    byte[] v1 = java.util.Arrays.copyOf(v2, v2.length - tail);
    v1[0] = 1;
    UsageRecord old = UsageRecordCodec.decode(v1);
    assertThat(old.sessionId()).isEqualTo(r.requestId());
    assertThat(old.kvByteNs()).isZero();
    assertThat(old.peakKvBytes()).isZero();
    assertThat(old.deviceNs()).isEqualTo(r.deviceNs());
    assertThat(old.finishedAt()).isEqualTo(r.finishedAt());
  }

  /**
   * Older codec versions stay readable: a version 3 record (before the batch company, issue 11)
   * decodes with every field it has and the batch company not measured.
   */
  @Test
  void olderCodecVersionsStayReadable() throws Exception {
    UsageRecord r = record(4);
    assertThat(r.batchCompanySum()).isEqualTo(20);
    byte[] v4 = UsageRecordCodec.encode(r);
    assertThat(v4[0]).isEqualTo(UsageRecordCodec.VERSION).isEqualTo((byte) 4);
    // version 3 is version 4 without the trailing batch company
    byte[] v3 = java.util.Arrays.copyOf(v4, v4.length - 8);
    v3[0] = 3;
    UsageRecord old = UsageRecordCodec.decode(v3);
    assertThat(old.batchCompanySum()).isEqualTo(UsageRecord.NOT_MEASURED);
    assertThat(old.sessionId()).isEqualTo(r.sessionId());
    assertThat(old.kvByteNs()).isEqualTo(r.kvByteNs());
    assertThat(old.peakKvBytes()).isEqualTo(r.peakKvBytes());
    assertThat(old.steps()).isEqualTo(r.steps());
    // a version 4 record cut short is refused, not read as version 3
    byte[] cut = java.util.Arrays.copyOf(v4, v4.length - 8);
    org.assertj.core.api.Assertions.assertThatThrownBy(() -> UsageRecordCodec.decode(cut))
        .isInstanceOf(java.io.IOException.class);
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
  void measuredBatchesTravelInTheSameGroupAsTheirRecordsAndReplayAfterThem() throws Exception {
    MeasuredBatch batch =
        MeasuredBatch.of(
            UUID.randomUUID(),
            UUID.randomUUID(),
            List.of(new MeasuredDelta(29_000_000, "demo-byte-lm", "cuda:0", 900, 700, 200, 3)),
            records(0, 2));
    assertThat(MeasuredBatch.decode(batch.encode())).isEqualTo(batch);
    assertThat(batch.accruals())
        .containsExactly(
            new MeasuredBatch.Accrual(
                "demo-byte-lm",
                "cuda:0",
                700,
                record(0).deviceNs() + record(1).deviceNs(),
                Math.max(29_000_000, record(1).finishedAt().getEpochSecond() / 60)));
    try (Outbox box = Outbox.open(dir, 1 << 20, 4096)) {
      box.append(records(0, 2), batch).get(10, TimeUnit.SECONDS);
    }
    List<Object> replayed = new ArrayList<>();
    try (Outbox box = Outbox.open(dir, 1 << 20, 4096)) {
      Outbox.ReplayReport r = box.replay(replayed::addAll, replayed::add, 100);
      assertThat(r.complete()).isTrue();
      assertThat(box.isEmpty()).isTrue();
    }
    assertThat(replayed).containsExactly(record(0), record(1), batch);
  }

  @Test
  void setAsideRecordsAreCountedFromDiskAndReplayedIdempotently() throws Exception {
    try (Outbox box = Outbox.open(dir, 1 << 20, 1 << 20)) {
      for (int i = 0; i < 10; i++) {
        box.append(List.of(record(i))).get(10, TimeUnit.SECONDS);
      }
    }
    try (RandomAccessFile f = new RandomAccessFile(segments(dir).get(0).toFile(), "rw")) {
      f.seek(offsetOf(3) + Outbox.HEADER + 5); // damage record 3: the segment is quarantined
      f.write(f.readByte() ^ 0x5A);
    }
    try (Outbox box = Outbox.open(dir, 1 << 20, 1 << 20)) {
      box.replay(rs -> {}, 100);
      box.deadLetter(record(20), "refused by a test");
      box.deadLetter(record(21), "refused by a test");
    }
    Set<String> stored = new HashSet<>(List.of("req-0")); // already in the ledger
    Outbox.RecordApplier applier =
        r ->
            r.requestId().equals("req-21")
                ? Outbox.Outcome.REFUSED
                : stored.add(r.requestId())
                    ? Outbox.Outcome.APPLIED
                    : Outbox.Outcome.ALREADY_PRESENT;
    try (Outbox box = Outbox.open(dir, 1 << 20, 1 << 20)) {
      // what waits was counted from disk at open
      assertThat(box.quarantinedSegments()).isEqualTo(1);
      assertThat(box.quarantinedRecords()).isEqualTo(9);
      assertThat(box.deadLettersWaiting()).isEqualTo(2);
      assertThat(box.replaySetAside(applier, b -> {}))
          .isEqualTo(new Outbox.SetAsideReport(9, 1, 1, 1, 0, 1));
      assertThat(box.quarantinedSegments()).isZero();
      assertThat(box.quarantinedRecords()).isZero();
      assertThat(box.deadLettersWaiting()).isEqualTo(1);
      // again: nothing applied twice, the refused record still waits
      assertThat(box.replaySetAside(applier, b -> {}))
          .isEqualTo(new Outbox.SetAsideReport(0, 0, 1, 0, 0, 1));
    }
    try (Outbox box = Outbox.open(dir, 1 << 20, 1 << 20)) {
      assertThat(box.quarantinedSegments()).isZero();
      assertThat(box.deadLettersWaiting()).isEqualTo(1);
    }
    assertThat(stored).hasSize(10).contains("req-20").doesNotContain("req-3", "req-21");
    try (Stream<Path> s = Files.list(dir.resolve("quarantine").resolve("replayed"))) {
      assertThat(s.count()).isEqualTo(1);
    }
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
