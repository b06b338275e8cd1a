package io.gpumeter.billing.ledger;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.KvUsage;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.usage.UsageQueries;
import io.gpumeter.metering.UsageRecord;
import java.math.BigInteger;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.Statement;
import java.time.Instant;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** KV memory-time (V10) through both store methods and back, and summed by the usage reader. */
class KvMemoryTimeLedgerTest {
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

  /** A record of key 301 with the given KV measures (its session is its request id). */
  static UsageRecord withKv(String id, Instant at, long kvByteNs, long peak) {
    UsageRecord r = TestSupport.record(id, 301, 7, "toy", at, 700, 300, 7, 3);
    return new UsageRecord(
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
        r.startedAt(),
        r.finishedAt(),
        r.requestId(),
        kvByteNs,
        peak);
  }

  @Test
  void bothStoreMethodsRoundTripTheKvMeasuresAndUsageSumsThemExactlyWithoutVoids()
      throws Exception {
    UsageRecord viaUnnest = withKv("kv-unnest", T0.plusSeconds(10), 123_456_789_012L, 4096L * 300);
    UsageRecord viaCopy = withKv("kv-copy", T0.plusSeconds(20), Long.MAX_VALUE, 4096L * 1024);
    UsageRecord big = withKv("kv-big", T0.plusSeconds(30), Long.MAX_VALUE, 4096L * 2);
    UsageRecord voided = withKv("kv-voided", T0.plusSeconds(40), 999, 4096L * 5000);
    UsageRecord nextHour = withKv("kv-next", T0.plusSeconds(3_700), 5, 4096);
    new JdbcLedgerStore(db.dataSource(), JdbcLedgerStore.Method.UNNEST)
        .write(List.of(viaUnnest, voided, nextHour));
    new JdbcLedgerStore(db.dataSource(), JdbcLedgerStore.Method.COPY).write(List.of(viaCopy, big));
    try (Connection c = db.dataSource().getConnection();
        Statement s = c.createStatement()) {
      s.execute(
          "INSERT INTO charge_voids (request_id, reason) VALUES ('kv-voided', 'client_gone')");
    }

    for (UsageRecord r : List.of(viaUnnest, viaCopy, big, voided, nextHour)) {
      UsageRecord stored = usage.find(r.requestId()).orElseThrow().record();
      assertThat(stored.kvByteNs()).as(r.requestId()).isEqualTo(r.kvByteNs());
      assertThat(stored.peakKvBytes()).as(r.requestId()).isEqualTo(r.peakKvBytes());
    }

    List<KvUsage> hours = usage.kvUsage(301, T0, T0.plusSeconds(7_200));
    assertThat(hours).hasSize(2);
    // Two records of Long.MAX_VALUE and one more: the sum is exact past a long.
    BigInteger firstHour =
        BigInteger.valueOf(Long.MAX_VALUE)
            .multiply(BigInteger.TWO)
            .add(BigInteger.valueOf(123_456_789_012L));
    assertThat(hours.get(0))
        .isEqualTo(new KvUsage(T0, "toy", firstHour, 4096L * 1024)); // the voided peak is out
    assertThat(hours.get(1))
        .isEqualTo(new KvUsage(T0.plusSeconds(3_600), "toy", BigInteger.valueOf(5), 4096));
    assertThat(usage.kvUsage(301, T0.minusSeconds(7_200), T0)).isEmpty();
  }

  /** A record of key 301 with the given batch company sum (issue 11, V19). */
  static UsageRecord withBatchCompany(String id, Instant at, long sum) {
    UsageRecord r = withKv(id, at, 0, 0);
    return new UsageRecord(
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
        r.startedAt(),
        r.finishedAt(),
        r.sessionId(),
        r.kvByteNs(),
        r.peakKvBytes(),
        sum);
  }

  @Test
  void bothStoreMethodsRoundTripTheBatchCompanyAndNullWhereNotMeasured() throws Exception {
    UsageRecord unnest = withBatchCompany("bc-unnest", T0.plusSeconds(50), 17);
    UsageRecord unnestNone =
        withBatchCompany("bc-unnest-none", T0.plusSeconds(51), UsageRecord.NOT_MEASURED);
    UsageRecord copy = withBatchCompany("bc-copy", T0.plusSeconds(52), Long.MAX_VALUE);
    UsageRecord copyNone =
        withBatchCompany("bc-copy-none", T0.plusSeconds(53), UsageRecord.NOT_MEASURED);
    new JdbcLedgerStore(db.dataSource(), JdbcLedgerStore.Method.UNNEST)
        .write(List.of(unnest, unnestNone));
    new JdbcLedgerStore(db.dataSource(), JdbcLedgerStore.Method.COPY)
        .write(List.of(copy, copyNone));
    for (UsageRecord r : List.of(unnest, unnestNone, copy, copyNone)) {
      assertThat(usage.find(r.requestId()).orElseThrow().record().batchCompanySum())
          .as(r.requestId())
          .isEqualTo(r.batchCompanySum());
    }
    try (Connection c = db.dataSource().getConnection();
        Statement s = c.createStatement();
        var rs =
            s.executeQuery(
                "SELECT count(*) FROM usage_records WHERE request_id LIKE 'bc-%-none'"
                    + " AND batch_company_sum IS NULL")) {
      rs.next();
      assertThat(rs.getInt(1)).as("not measured is stored as NULL").isEqualTo(2);
    }
  }
}
