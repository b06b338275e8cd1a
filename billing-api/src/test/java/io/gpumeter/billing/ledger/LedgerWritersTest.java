package io.gpumeter.billing.ledger;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.LedgerStats;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.UsageRecord;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.Statement;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Several writer threads ({@link LedgerConfig#writers()}) on the real PostgreSQL: batches commit in
 * parallel on their own connections, and the ledger stays exact: every request id stored once
 * (duplicates published from different threads land in different writers' batches), and every
 * hourly rollup equals the sum of its raw rows.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class LedgerWritersTest {
  @TempDir static Path tmp;
  static Database db;

  static final Instant T0 = Instant.parse("2026-03-01T10:00:00Z");

  @BeforeAll
  static void start() {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
  }

  @AfterAll
  static void stop() {
    db.close();
  }

  @Test
  void fourWritersStoreEveryRequestIdOnceAndKeepRollupsEqualToTheRawRows() throws Exception {
    long key = 401;
    int publishers = 8;
    int perPublisher = 1_000;
    int unique = publishers * perPublisher / 2; // each id is published twice, by two threads
    Set<String> writerThreads = ConcurrentHashMap.newKeySet();
    LedgerStore jdbc = new JdbcLedgerStore(db.dataSource());
    LedgerStore observed =
        new LedgerStore() {
          @Override
          public int write(List<UsageRecord> records) throws LedgerWriteException {
            writerThreads.add(Thread.currentThread().getName());
            return jdbc.write(records);
          }
        };
    LedgerConfig config = LedgerConfig.custom().writers(4).maxBatchSize(32).build();
    List<CompletableFuture<Void>> futures = new ArrayList<>();
    LedgerStats stats;
    try (LedgerWriter ledger = new LedgerWriter(observed, config)) {
      ExecutorService pool = Executors.newFixedThreadPool(publishers);
      CountDownLatch go = new CountDownLatch(1);
      List<Future<List<CompletableFuture<Void>>>> parts = new ArrayList<>();
      for (int t = 0; t < publishers; t++) {
        int thread = t;
        parts.add(
            pool.submit(
                () -> {
                  go.await();
                  List<CompletableFuture<Void>> mine = new ArrayList<>();
                  for (int i = 0; i < perPublisher; i++) {
                    // threads 2k and 2k+1 publish the same ids; three hours, two models, and
                    // both models in every batch, so concurrent batches touch the same rollups
                    int id = (thread / 2) * perPublisher + i;
                    Instant at = T0.plusSeconds(id * 37L % 10_800);
                    mine.add(
                        ledger.publish(
                            TestSupport.record(
                                "w401-" + id,
                                key,
                                7,
                                id % 2 == 0 ? "toy" : "big",
                                at,
                                1000 + id,
                                10L * id,
                                id % 50,
                                id % 7)));
                  }
                  return mine;
                }));
      }
      go.countDown();
      for (Future<List<CompletableFuture<Void>>> part : parts) {
        futures.addAll(part.get(60, TimeUnit.SECONDS));
      }
      pool.shutdown();
      CompletableFuture.allOf(futures.toArray(CompletableFuture[]::new)).get(120, TimeUnit.SECONDS);
      stats = ledger.stats();
    }
    assertThat(futures).allMatch(f -> f.isDone() && !f.isCompletedExceptionally());
    assertThat(stats.accepted()).isEqualTo(publishers * perPublisher);
    assertThat(stats.stored()).as("each id once").isEqualTo(unique);
    assertThat(stats.duplicates()).isEqualTo(publishers * perPublisher - unique);
    assertThat(writerThreads)
        .as("batches were committed by several writer threads")
        .hasSizeGreaterThan(1)
        .allMatch(n -> n.matches("gpumeter-ledger-writer-[1-4]"));
    assertThat(
            query(
                "SELECT count(*), count(DISTINCT request_id) FROM usage_records"
                    + " WHERE api_key_id = "
                    + key))
        .isEqualTo(unique + "," + unique);
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
    assertThat(rolled).as("rollups equal the raw rows").isEqualTo(raw);
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
