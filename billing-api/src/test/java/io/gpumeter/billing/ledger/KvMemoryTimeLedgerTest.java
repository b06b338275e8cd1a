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

  /** The rollup row of key 302's bucket: {kv_byte_ns (usage_hourly − voided), peak_kv_bytes}. */
  static BigInteger[] rollup(Instant hour) throws Exception {
    try (Connection c = db.dataSource().getConnection();
        Statement s = c.createStatement();
        var rs =
            s.executeQuery(
                "SELECT h.kv_byte_ns - coalesce(v.kv_byte_ns, 0), h.peak_kv_bytes"
                    + " FROM usage_hourly h LEFT JOIN usage_hourly_voided v USING (api_key_id,"
                    + " hour, model, device) WHERE h.api_key_id = 302 AND h.hour = '"
                    + hour
                    + "'")) {
      assertThat(rs.next()).isTrue();
      return new BigInteger[] {
        rs.getBigDecimal(1).toBigIntegerExact(), rs.getBigDecimal(2).toBigIntegerExact()
      };
    }
  }

  /** The same query over the raw records that are not voided: what the rollup must equal. */
  static BigInteger[] raw(Instant hour) throws Exception {
    try (Connection c = db.dataSource().getConnection();
        Statement s = c.createStatement();
        var rs =
            s.executeQuery(
                "SELECT coalesce(sum(kv_byte_ns), 0), coalesce(max(peak_kv_bytes), 0)"
                    + " FROM usage_records r WHERE api_key_id = 302 AND finished_at >= '"
                    + hour
                    + "' AND finished_at < '"
                    + hour.plusSeconds(3600)
                    + "' AND NOT EXISTS (SELECT 1 FROM charge_voids v"
                    + " WHERE v.request_id = r.request_id)")) {
      rs.next();
      return new BigInteger[] {
        rs.getBigDecimal(1).toBigIntegerExact(), rs.getBigDecimal(2).toBigIntegerExact()
      };
    }
  }

  static UsageRecord ofKey302(String id, Instant at, long kv, long peak) {
    UsageRecord r = withKv(id, at, kv, peak);
    return new UsageRecord(
        r.requestId(),
        302,
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
        r.batchCompanySum());
  }

  /**
   * V22: the hourly rollup carries the sum of KV byte-ns and the largest peak of the charges that
   * stand, through the ledger's one rollup statement: a replayed batch adds nothing, a void applied
   * after its record subtracts its byte-ns and takes its peak out (recomputed), and a void that
   * arrives before its record keeps the record out of both.
   */
  @Test
  void theHourlyRollupKeepsKvSumsAndPeaksExactThroughReplaysAndVoids() throws Exception {
    Instant hour = Instant.parse("2026-04-02T08:00:00Z");
    UsageRecord small = ofKey302("r22-small", hour.plusSeconds(5), 1_000, 4096);
    UsageRecord biggest = ofKey302("r22-biggest", hour.plusSeconds(6), Long.MAX_VALUE, 40_960);
    UsageRecord mid = ofKey302("r22-mid", hour.plusSeconds(7), 7_000, 8192);
    JdbcLedgerStore unnest = new JdbcLedgerStore(db.dataSource(), JdbcLedgerStore.Method.UNNEST);
    JdbcLedgerStore copy = new JdbcLedgerStore(db.dataSource(), JdbcLedgerStore.Method.COPY);
    unnest.write(List.of(small, biggest));
    copy.write(List.of(mid));
    BigInteger all = BigInteger.valueOf(Long.MAX_VALUE).add(BigInteger.valueOf(1_000 + 7_000));
    assertThat(rollup(hour)).containsExactly(all, BigInteger.valueOf(40_960));
    assertThat(rollup(hour)).containsExactly(raw(hour));

    // a replay of the same batch (the outbox after an outage) changes nothing
    unnest.write(List.of(small, biggest));
    copy.write(List.of(mid, small));
    assertThat(rollup(hour)).containsExactly(all, BigInteger.valueOf(40_960));

    // voiding the biggest takes its byte-ns out and recomputes the peak from the rest
    try (Connection c = db.dataSource().getConnection();
        Statement s = c.createStatement()) {
      s.execute(
          "INSERT INTO charge_voids (request_id, reason) VALUES ('r22-biggest', 'client_gone')");
      // a void that arrives before its record (its charge lands later, from the outbox)
      s.execute("INSERT INTO charge_voids (request_id, reason) VALUES ('r22-late', 'not_durable')");
    }
    assertThat(rollup(hour)).containsExactly(BigInteger.valueOf(8_000), BigInteger.valueOf(8192));
    unnest.write(List.of(ofKey302("r22-late", hour.plusSeconds(8), 123, 1 << 20)));
    assertThat(rollup(hour)).containsExactly(BigInteger.valueOf(8_000), BigInteger.valueOf(8192));
    assertThat(rollup(hour)).containsExactly(raw(hour));

    // the usage reader reports the same, beside the rest of the hour's usage
    assertThat(usage.kvUsage(302, hour, hour.plusSeconds(3600)))
        .containsExactly(new KvUsage(hour, "toy", BigInteger.valueOf(8_000), 8192));
    assertThat(usage.usage(302, hour, hour.plusSeconds(3600)).totals().requests()).isEqualTo(2);
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
