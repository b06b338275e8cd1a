package io.gpumeter.benchmarks.usage;

import io.gpumeter.billing.BucketWidth;
import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.UsageBucketQuery;
import io.gpumeter.billing.UsageGroup;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.usage.UsageQueries;
import java.math.BigInteger;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.Statement;
import java.sql.Timestamp;
import java.time.Duration;
import java.time.Instant;
import java.time.LocalDate;
import java.time.ZoneOffset;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;

/**
 * Issue 11 item 6: a month of per-request records for one account (10 million by default),
 * generated with SQL ({@code generate_series} into {@code usage_records}, then the hourly rollup
 * from them, as the ledger would have written it; then, for the costs API, every record priced: one
 * {@code charge_prices} row each, as the V7 trigger writes it, and the {@code cost_hourly} rollup
 * from them, as V14's trigger adds it), then {@code bucket_width=1d} queries for the month through
 * {@link UsageQueries#buckets} and {@link UsageQueries#costBuckets}, timed. Not a test: run by hand
 * (see benchmarks/RESULTS.md, "Usage API: a month of 10 million records" and "Costs API: ...").
 *
 * <p>Arguments: {@code [records] [keys] [rounds] [pg-binary-cache-dir]} (the last: a folder of
 * already repacked PostgreSQL binaries, e.g. a module's {@code target/pg-binaries}, to skip the
 * repack).
 */
public final class UsageQueryBenchmark {
  private UsageQueryBenchmark() {}

  public static void main(String[] args) throws Exception {
    long records = args.length > 0 ? Long.parseLong(args[0]) : 10_000_000L;
    int keys = args.length > 1 ? Integer.parseInt(args[1]) : 20;
    int rounds = args.length > 2 ? Integer.parseInt(args[2]) : 20;
    Path dir = Files.createTempDirectory("usage-bench");
    Path binaries = args.length > 3 ? Path.of(args[3]) : dir;
    // the current month has a partition from the migrations, as production would
    Instant start =
        LocalDate.now(ZoneOffset.UTC).withDayOfMonth(1).atStartOfDay(ZoneOffset.UTC).toInstant();
    Duration month = Duration.ofDays(30);
    System.out.printf(
        "# UsageQueryBenchmark: %d records, %d keys, 2 models, one account, %s + 30 days;"
            + " %d CPUs, %s, java %s%n",
        records,
        keys,
        start,
        Runtime.getRuntime().availableProcessors(),
        Instant.now(),
        System.getProperty("java.version"));
    try (Database db =
        Database.start(
            DatabaseConfig.builder()
                .dataDirectory(dir.resolve("pg"))
                .binaryCacheDirectory(binaries)
                .embeddedWatchdogInterval(Duration.ZERO)
                .build())) {
      long t0 = System.nanoTime();
      long account;
      try (Connection c = db.maintenanceDataSource().getConnection()) {
        try (Statement s = c.createStatement();
            var rs =
                s.executeQuery(
                    "INSERT INTO accounts (name, currency) VALUES ('bench', 'USD') RETURNING id")) {
          rs.next();
          account = rs.getLong(1);
        }
        try (Statement s = c.createStatement()) {
          // synthetic rows have no voids: skip V6's per-row void check while loading them
          s.execute("ALTER TABLE usage_records DISABLE TRIGGER usage_records_apply_void");
        }
        try (PreparedStatement ps =
            c.prepareStatement(
                "INSERT INTO usage_records (request_id, api_key_id, account_id, model, device,"
                    + " device_name, device_uuid, timer_kind, driver_version, cuda_version,"
                    + " weight_policy, device_ns, prefill_ns, decode_ns, prompt_tokens,"
                    + " completion_tokens, queue_ns, steps, status, started_at, finished_at,"
                    + " session_id)"
                    + " SELECT 'req-' || g, 1 + g % ?, ?,"
                    + " CASE WHEN g % 3 = 0 THEN 'big' ELSE 'small' END, 'cuda:0',"
                    + " 'NVIDIA H100', 'GPU-1', 'cuda-event', '550', '12.4', 'linear',"
                    + " 3000000 + g % 1000, 1000000, 2000000 + g % 1000, 20 + g % 50, 40, 1000,"
                    + " 41, 'ok', ts - interval '50 milliseconds', ts, 'session-' || (g / 8)"
                    + " FROM (SELECT g, ?::timestamptz + (g * ?::bigint) * interval '1 microsecond'"
                    + " AS ts FROM generate_series(0, ? - 1) g) s")) {
          ps.setInt(1, keys);
          ps.setLong(2, account);
          ps.setTimestamp(3, Timestamp.from(start));
          ps.setLong(4, month.toNanos() / 1000 / records);
          ps.setLong(5, records);
          ps.executeUpdate();
        }
        long t1 = System.nanoTime();
        try (Statement s = c.createStatement()) {
          s.execute("ALTER TABLE usage_records ENABLE TRIGGER usage_records_apply_void");
          s.executeUpdate(
              "INSERT INTO usage_hourly (hour, api_key_id, account_id, model, device, requests,"
                  + " device_ns, prefill_ns, decode_ns, prompt_tokens, completion_tokens)"
                  + " SELECT date_trunc('hour', finished_at, 'UTC'), api_key_id, max(account_id),"
                  + " model, device, count(*), sum(device_ns), sum(prefill_ns), sum(decode_ns),"
                  + " sum(prompt_tokens), sum(completion_tokens) FROM usage_records"
                  + " GROUP BY 1, api_key_id, model, device");
          s.execute("ANALYZE");
        }
        long t2 = System.nanoTime();
        System.out.printf(
            "generation: usage_records %.1f s, usage_hourly + ANALYZE %.1f s%n",
            (t1 - t0) / 1e9, (t2 - t1) / 1e9);
        // Priced after they are stored (a version in place before would have made the V7/V16
        // trigger price and deduct the 10 million rows record by record; the charge rows are the
        // same): one price version from before the month, one charge_prices row per record with
        // the trigger's exact cost, and cost_hourly rolled up from them with one statement, as
        // V18's price_and_deduct_charges() adds a batch's rollup (no trigger on charge_prices).
        try (Statement s = c.createStatement()) {
          s.executeUpdate(
              "INSERT INTO price_versions (model, device_class, currency, price_micros_per_s,"
                  + " effective) VALUES ('*', 'nvidia-h100', 'USD', "
                  + PRICE_MICROS_PER_S
                  + ", tstzrange('"
                  + start.minus(Duration.ofDays(1))
                  + "', NULL, '[)'))");
          s.executeUpdate(
              "INSERT INTO charge_prices (request_id, account_id, model, device_class,"
                  + " finished_at, device_ns, price_version_id, price_micros_per_s, cost_nmicros)"
                  + " SELECT r.request_id, r.account_id, r.model, 'nvidia-h100', r.finished_at,"
                  + " r.device_ns, v.id, v.price_micros_per_s,"
                  + " r.device_ns::numeric * v.price_micros_per_s"
                  + " FROM usage_records r CROSS JOIN price_versions v");
          long t3 = System.nanoTime();
          s.executeUpdate(
              "INSERT INTO cost_hourly (hour, api_key_id, account_id, model, device, requests,"
                  + " cost_nmicros)"
                  + " SELECT date_trunc('hour', r.finished_at, 'UTC'), r.api_key_id, r.account_id,"
                  + " r.model, r.device, count(*), sum(n.cost_nmicros)"
                  + " FROM charge_prices n JOIN usage_records r"
                  + " ON r.request_id = n.request_id AND r.finished_at = n.finished_at"
                  + " GROUP BY 1, 2, 3, 4, 5");
          s.execute("ANALYZE");
          long t4 = System.nanoTime();
          System.out.printf(
              "generation: charge_prices %.1f s, cost_hourly + ANALYZE %.1f s%n",
              (t3 - t2) / 1e9, (t4 - t3) / 1e9);
        }
      }
      UsageQueries usage = new UsageQueries(db.dataSource());
      Instant end = start.plus(Duration.ofDays(31));
      for (Set<UsageGroup> groups :
          List.of(
              Set.<UsageGroup>of(),
              EnumSet.of(UsageGroup.MODEL, UsageGroup.API_KEY_ID, UsageGroup.DEVICE))) {
        UsageBucketQuery q =
            new UsageBucketQuery(
                account, null, start, end, BucketWidth.DAY, groups, List.of(), List.of());
        long[] rows = new long[1];
        long[] requests = new long[1];
        long[] ns = new long[rounds];
        for (int i = -3; i < rounds; i++) { // 3 warm-up rounds
          rows[0] = 0;
          requests[0] = 0;
          long a = System.nanoTime();
          usage.buckets(
              q,
              r -> {
                rows[0]++;
                requests[0] += r.totals().requests();
              });
          long b = System.nanoTime();
          if (i >= 0) {
            ns[i] = b - a;
          }
        }
        if (requests[0] != records) {
          throw new IllegalStateException("counted " + requests[0] + " of " + records);
        }
        Arrays.sort(ns);
        System.out.printf(
            "bucket_width=1d group_by=%s: %d results, %d requests; %d rounds: min %.1f ms,"
                + " median %.1f ms, max %.1f ms%n",
            groups,
            rows[0],
            requests[0],
            rounds,
            ns[0] / 1e6,
            ns[rounds / 2] / 1e6,
            ns[rounds - 1] / 1e6);
      }
      // the costs API's 1d path: cost_hourly, the same buckets, exact sums rounded per result
      BigInteger expected = BigInteger.ZERO;
      try (Connection c = db.maintenanceDataSource().getConnection();
          Statement s = c.createStatement();
          var rs = s.executeQuery("SELECT sum(cost_nmicros) FROM charge_prices")) {
        rs.next();
        expected = rs.getBigDecimal(1).toBigIntegerExact();
      }
      for (Set<UsageGroup> groups :
          List.of(
              Set.<UsageGroup>of(),
              EnumSet.of(UsageGroup.MODEL, UsageGroup.API_KEY_ID, UsageGroup.DEVICE))) {
        UsageBucketQuery q =
            new UsageBucketQuery(
                account, null, start, end, BucketWidth.DAY, groups, List.of(), List.of());
        long[] rows = new long[1];
        long[] requests = new long[1];
        BigInteger[] exact = {BigInteger.ZERO};
        long[] ns = new long[rounds];
        for (int i = -3; i < rounds; i++) { // 3 warm-up rounds
          rows[0] = 0;
          requests[0] = 0;
          exact[0] = BigInteger.ZERO;
          long a = System.nanoTime();
          usage.costBuckets(
              q,
              r -> {
                rows[0]++;
                requests[0] += r.requests();
                exact[0] = exact[0].add(r.exactNanoMicros());
              });
          long b = System.nanoTime();
          if (i >= 0) {
            ns[i] = b - a;
          }
        }
        if (requests[0] != records || !exact[0].equals(expected)) {
          throw new IllegalStateException(
              "costs counted "
                  + requests[0]
                  + " of "
                  + records
                  + ", "
                  + exact[0]
                  + " of "
                  + expected);
        }
        Arrays.sort(ns);
        System.out.printf(
            "costs bucket_width=1d group_by=%s: %d results, %d requests, %s nano-micro-units;"
                + " %d rounds: min %.1f ms, median %.1f ms, max %.1f ms%n",
            groups,
            rows[0],
            requests[0],
            exact[0],
            rounds,
            ns[0] / 1e6,
            ns[rounds / 2] / 1e6,
            ns[rounds - 1] / 1e6);
      }
    }
  }

  /** The one price of the synthetic month, micro-units per device-second. */
  private static final long PRICE_MICROS_PER_S = 3_333_337;
}
