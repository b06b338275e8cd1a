package io.gpumeter.billing.ledger;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.LedgerStats;
import io.gpumeter.billing.StoredUsage;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.UsageReport;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.usage.UsageQueries;
import io.gpumeter.metering.UsageRecord;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.Statement;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The ledger against a real PostgreSQL. Each test uses its own API key ids. */
class LedgerWriterTest {
  @TempDir static Path tmp;
  static Database db;
  static UsageQueries usage;

  static final Instant T0 = Instant.parse("2026-03-01T10:00:00Z");

  @BeforeAll
  static void start() {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
    usage = new UsageQueries(db.dataSource());
  }

  @AfterAll
  static void stop() {
    db.close();
  }

  static LedgerWriter writer() {
    return LedgerWriter.jdbc(db.dataSource(), LedgerConfig.defaults().withMaxBatchSize(128));
  }

  @Test
  void thousandRecordsFromFourThreadsLandExactlyOnce() throws Exception {
    long key = 101;
    int threads = 4;
    int perThread = 250;
    List<CompletableFuture<Void>> futures = new ArrayList<>();
    try (LedgerWriter ledger = writer()) {
      ExecutorService pool = Executors.newFixedThreadPool(threads);
      CountDownLatch go = new CountDownLatch(1);
      List<Future<List<CompletableFuture<Void>>>> parts = new ArrayList<>();
      for (int t = 0; t < threads; t++) {
        int thread = t;
        parts.add(
            pool.submit(
                () -> {
                  go.await();
                  List<CompletableFuture<Void>> mine = new ArrayList<>();
                  for (int i = 0; i < perThread; i++) {
                    // Spread over three hours and two models.
                    Instant at = T0.plusSeconds((thread * perThread + i) * 37L % 10_800);
                    String model = i % 2 == 0 ? "toy" : "big";
                    mine.add(
                        ledger.publish(
                            TestSupport.record(
                                "k101-" + thread + "-" + i,
                                key,
                                7,
                                model,
                                at,
                                1000 + i,
                                10 * i,
                                i % 50,
                                i % 7)));
                  }
                  return mine;
                }));
      }
      go.countDown();
      for (Future<List<CompletableFuture<Void>>> part : parts) {
        futures.addAll(part.get(30, TimeUnit.SECONDS));
      }
      pool.shutdown();
      CompletableFuture.allOf(futures.toArray(CompletableFuture[]::new)).get(30, TimeUnit.SECONDS);
      LedgerStats stats = ledger.stats();
      assertThat(stats.accepted()).isEqualTo(1000);
      assertThat(stats.stored()).isEqualTo(1000);
      assertThat(stats.duplicates()).isZero();
      assertThat(stats.batches()).isLessThan(1000); // it batched
    }
    assertThat(futures).hasSize(1000).allMatch(f -> f.isDone() && !f.isCompletedExceptionally());
    assertThat(
            query(
                "SELECT count(*), count(DISTINCT request_id) FROM usage_records WHERE api_key_id = 101"))
        .isEqualTo("1000,1000");
    for (int t = 0; t < threads; t++) {
      assertThat(usage.countForRequest("k101-" + t + "-" + (perThread - 1))).isEqualTo(1);
    }
    assertRollupMatchesRaw(key);
    UsageReport r = usage.usage(key, T0, T0.plus(Duration.ofHours(3)));
    assertThat(r.totals().requests()).isEqualTo(1000);
    assertThat(r.hours()).hasSize(6); // 3 hours x 2 models
  }

  @Test
  void sameRequestIdTwiceIsStoredAndRolledUpOnce() throws Exception {
    long key = 102;
    UsageRecord r = TestSupport.record("dup-1", key, T0.plusSeconds(5));
    try (LedgerWriter ledger = writer()) {
      // Same batch (both queued before the writer wakes, most likely) and separate batches.
      CompletableFuture<Void> a = ledger.publish(r);
      CompletableFuture<Void> b = ledger.publish(r);
      CompletableFuture.allOf(a, b).get(10, TimeUnit.SECONDS);
      ledger.publish(r).get(10, TimeUnit.SECONDS);
      assertThat(ledger.stats().stored()).isEqualTo(1);
      assertThat(ledger.stats().duplicates()).isEqualTo(2);
    }
    // A new writer, as after a restart or on another replica.
    try (LedgerWriter again = writer()) {
      again.publish(r).get(10, TimeUnit.SECONDS);
      assertThat(again.stats().duplicates()).isEqualTo(1);
    }
    assertThat(usage.countForRequest("dup-1")).isEqualTo(1);
    assertThat(query("SELECT requests, device_ns FROM usage_hourly WHERE api_key_id = 102"))
        .isEqualTo("1," + r.deviceNs());
    assertRollupMatchesRaw(key);
  }

  @Test
  void duplicatesWithinOneStoreBatchCountOnce() throws Exception {
    long key = 103;
    UsageRecord r1 = TestSupport.record("dup-batch-1", key, T0);
    UsageRecord r2 = TestSupport.record("dup-batch-2", key, T0);
    int inserted = new JdbcLedgerStore(db.dataSource()).write(List.of(r1, r2, r1, r2, r1));
    assertThat(inserted).isEqualTo(2);
    assertThat(query("SELECT requests FROM usage_hourly WHERE api_key_id = 103")).isEqualTo("2");
    assertRollupMatchesRaw(key);
  }

  @Test
  void storedRecordRoundTrips() throws Exception {
    UsageRecord r =
        new UsageRecord(
            "roundtrip-1",
            104,
            8,
            "big",
            new io.gpumeter.metering.TimerInfo(
                "cuda-event", "cuda:0", "NVIDIA H100", "GPU-1234", "550.54", "12.4"),
            "tokens;prefill=1.0;decode=1.0",
            1_234_567_891L,
            1_000_000_000L,
            234_567_891L,
            512,
            64,
            42_000,
            65,
            io.gpumeter.metering.UsageStatus.CANCELLED,
            Instant.parse("2026-03-01T10:59:59.123456789Z"),
            Instant.parse("2026-03-01T10:59:59.999999999Z"));
    try (LedgerWriter ledger = writer()) {
      ledger.publish(r).get(10, TimeUnit.SECONDS);
    }
    StoredUsage s = usage.find("roundtrip-1").orElseThrow();
    UsageRecord expected =
        new UsageRecord(
            r.requestId(),
            r.apiKeyId(),
            r.accountId(),
            r.model(),
            r.timer(),
            r.weightPolicy(),
            r.deviceNs(),
            r.prefillNs(),
            r.decodeNs(),
            r.promptTokens(),
            r.completionTokens(),
            r.queueNs(),
            r.steps(),
            r.status(),
            Instant.parse("2026-03-01T10:59:59.123456Z"),
            Instant.parse("2026-03-01T10:59:59.999999Z"));
    assertThat(s.record()).isEqualTo(expected);
    assertThat(s.recordedAt()).isAfter(Instant.now().minusSeconds(60));
    // Truncated, not rounded: still in the 10:00 hour.
    assertThat(
            query(
                "SELECT (hour AT TIME ZONE 'UTC')::text FROM usage_hourly WHERE api_key_id = 104"))
        .isEqualTo("2026-03-01 10:00:00");
    assertThat(usage.find("no-such-request")).isEmpty();
    assertThat(usage.countForRequest("no-such-request")).isZero();
  }

  @Test
  void closeFlushesEverythingQueued() throws Exception {
    long key = 105;
    List<CompletableFuture<Void>> futures = new ArrayList<>();
    LedgerWriter ledger =
        LedgerWriter.jdbc(
            db.dataSource(),
            LedgerConfig.defaults().withMaxBatchSize(7).withLinger(Duration.ofMillis(20)));
    for (int i = 0; i < 300; i++) {
      futures.add(ledger.publish(TestSupport.record("close-" + i, key, T0.plusSeconds(i))));
    }
    ledger.close();
    assertThat(futures).allMatch(f -> f.isDone() && !f.isCompletedExceptionally());
    assertThat(query("SELECT count(*) FROM usage_records WHERE api_key_id = 105")).isEqualTo("300");
    assertRollupMatchesRaw(key);
    assertThat(ledger.publish(TestSupport.record("after-close", key, T0)))
        .isCompletedExceptionally();
    ledger.close(); // idempotent
  }

  @Test
  void aBadRecordFailsOnlyItself() throws Exception {
    long key = 106;
    // PostgreSQL text cannot hold NUL: the database refuses this record (a data error).
    UsageRecord bad = TestSupport.record("bad-\u0000-1", key, T0);
    List<CompletableFuture<Void>> good = new ArrayList<>();
    CompletableFuture<Void> badFuture;
    try (LedgerWriter ledger =
        LedgerWriter.jdbc(
            db.dataSource(), LedgerConfig.defaults().withLinger(Duration.ofMillis(50)))) {
      for (int i = 0; i < 5; i++) {
        good.add(ledger.publish(TestSupport.record("good-" + i, key, T0)));
      }
      badFuture = ledger.publish(bad);
      for (int i = 5; i < 10; i++) {
        good.add(ledger.publish(TestSupport.record("good-" + i, key, T0)));
      }
    }
    assertThat(good).allMatch(f -> f.isDone() && !f.isCompletedExceptionally());
    assertThat(badFuture).isCompletedExceptionally();
    assertThat(query("SELECT count(*) FROM usage_records WHERE api_key_id = 106")).isEqualTo("10");
    assertRollupMatchesRaw(key);
  }

  /** Every rollup column equals the sum over the raw rows, per (hour, model, device). */
  static void assertRollupMatchesRaw(long key) throws Exception {
    String raw =
        query(
            "SELECT string_agg(x, ';' ORDER BY x) FROM (SELECT concat_ws(',',"
                + " date_trunc('hour', finished_at, 'UTC'), model, device, count(*), sum(device_ns),"
                + " sum(prefill_ns), sum(decode_ns), sum(prompt_tokens), sum(completion_tokens)) x"
                + " FROM usage_records WHERE api_key_id = "
                + key
                + " GROUP BY date_trunc('hour', finished_at, 'UTC'), model, device) s");
    String rolled =
        query(
            "SELECT string_agg(x, ';' ORDER BY x) FROM (SELECT concat_ws(',', hour, model, device,"
                + " requests, device_ns, prefill_ns, decode_ns, prompt_tokens, completion_tokens) x"
                + " FROM usage_hourly WHERE api_key_id = "
                + key
                + ") s");
    assertThat(raw).isNotNull();
    assertThat(rolled).isEqualTo(raw);
  }

  /** First row, columns joined by commas. */
  static String query(String sql) throws Exception {
    try (Connection c = db.dataSource().getConnection();
        Statement s = c.createStatement();
        ResultSet rs = s.executeQuery(sql)) {
      if (!rs.next()) {
        return null;
      }
      StringBuilder sb = new StringBuilder();
      for (int i = 1; i <= rs.getMetaData().getColumnCount(); i++) {
        if (i > 1) {
          sb.append(',');
        }
        sb.append(rs.getString(i));
      }
      return sb.toString();
    }
  }
}
