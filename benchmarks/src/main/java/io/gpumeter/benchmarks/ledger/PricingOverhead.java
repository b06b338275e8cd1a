package io.gpumeter.benchmarks.ledger;

import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.ledger.JdbcLedgerStore;
import io.gpumeter.billing.pricing.Settlement;
import io.gpumeter.metering.UsageRecord;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.Statement;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import javax.sql.DataSource;

/**
 * What pricing and deduction cost the ledger's batch path: the same {@link LedgerThroughput}
 * workload (UNNEST, one connection) written in alternating rounds on one database in one run, so
 * the modes are compared side by side under the same load: {@code off} (no pricing: V25's gate
 * trigger disabled and no {@code settle_seq}, the unpriced path before V25), {@code V20} (V20's
 * {@code price_and_deduct_charges()} as the statement trigger in the insert, the path before V25)
 * and {@code V25} (the write path of V25: the record with its {@code settle_seq} under the gate;
 * then {@code settle_charges()} after every {@link #SETTLE_CHUNK} records, as the settler thread
 * does; printed as the write path, the settlement and their sum). Every record's account exists,
 * has a price for its (model, device class) and prepaid credit; half the accounts are on a plan
 * whose small allowance runs out during the run, so all deduction steps run. (V16 and V18 modes
 * were dropped as the functions they needed were; their figures stay in RESULTS.md.)
 *
 * <p>Usage: {@code PricingOverhead [records per round] [batch] [rounds]}.
 */
public final class PricingOverhead {
  private PricingOverhead() {}

  public static void main(String[] args) throws Exception {
    int records = args.length > 0 ? Integer.parseInt(args[0]) : 50_000;
    int batch = args.length > 1 ? Integer.parseInt(args[1]) : 1_000;
    int rounds = args.length > 2 ? Integer.parseInt(args[2]) : 3;
    LedgerThroughput.quietLogs();
    Path dir = Files.createTempDirectory("pricing-bench");
    System.out.printf(
        "# PricingOverhead: %d records per round, batches of %d, %d rounds, %d CPUs, %s%n%n",
        records, batch, rounds, Runtime.getRuntime().availableProcessors(), Instant.now());
    try (Database db =
        Database.start(
            DatabaseConfig.builder()
                .dataDirectory(dir.resolve("pg"))
                // -Dpg.binaries=DIR reuses a root-safe repack of the PostgreSQL binaries
                .binaryCacheDirectory(
                    System.getProperty("pg.binaries") == null
                        ? null
                        : Path.of(System.getProperty("pg.binaries")))
                .embeddedWatchdogInterval(Duration.ZERO)
                .build())) {
      DataSource owner = db.maintenanceDataSource();
      try (Connection c = owner.getConnection();
          Statement st = c.createStatement()) {
        st.execute(
            "INSERT INTO accounts (id, name, currency) OVERRIDING SYSTEM VALUE"
                + " SELECT 1000 + k, 'bench-' || k, 'USD' FROM generate_series(1, 200) k");
        st.execute(
            "INSERT INTO price_versions (model, device_class, currency, price_micros_per_s,"
                + " effective) VALUES ('*', 'nvidia-h100-80gb', 'USD', 1000,"
                + " tstzrange('2020-01-01', NULL)), ('llama-3-8b', 'nvidia-h100-80gb', 'USD', 1200,"
                + " tstzrange('2020-01-01', NULL))");
        st.execute("INSERT INTO plans (name, included_ns) VALUES ('bench', 50000000)");
        // a class-weighted pool (V20; V18's function ignores the weight)
        st.execute(
            "INSERT INTO plan_class_weights (plan_id, device_class, weight_ppm)"
                + " SELECT id, 'nvidia-h100-80gb', 2500000 FROM plans");
        st.execute(
            "INSERT INTO subscriptions (account_id, plan_id, active) SELECT 1000 + k,"
                + " (SELECT id FROM plans), tstzrange('2020-01-01', NULL)"
                + " FROM generate_series(1, 200, 2) k");
        st.execute(
            "INSERT INTO credit_grants (account_id, source, amount_micros, expires_at)"
                + " SELECT 1000 + k, 'topup', 1000000000, '2100-01-01' FROM generate_series(1, 200) k");
        st.execute(
            "INSERT INTO balance_entries (account_id, grant_id, kind, amount_nmicros)"
                + " SELECT account_id, id, 'topup', amount_micros::numeric * 1000000000"
                + " FROM credit_grants ORDER BY id");
      }
      {
        // The ledger's own pool (the app role); batches are written back to back from one thread.
        DataSource one = db.ledgerDataSource();
        long postmaster = db.embeddedPostmasterPid().orElseThrow();
        JdbcLedgerStore store = new JdbcLedgerStore(one, JdbcLedgerStore.Method.UNNEST);
        LedgerThroughput.writeAll(store, LedgerThroughput.records("warm", 20_000), batch);
        Settlement.settle(owner); // V25's write path is the migrated default: the warm-up settled
        System.out.println(
            "| pricing | round | records | seconds | records/s | PostgreSQL CPU µs/record (all processes) |");
        System.out.println("|---|---:|---:|---:|---:|---:|");
        String v20 = function("V20__plan_pools_and_overage.sql", "price_and_deduct_charges");
        try (Connection c = owner.getConnection();
            Statement st = c.createStatement()) {
          st.execute(v20);
          st.execute(
              "CREATE TRIGGER usage_records_price AFTER INSERT ON usage_records"
                  + " REFERENCING NEW TABLE AS new_rows"
                  + " FOR EACH STATEMENT EXECUTE FUNCTION price_and_deduct_charges()");
        }
        for (int round = 1; round <= rounds; round++) {
          for (String mode : new String[] {"off", "V20", "V25"}) {
            try (Connection c = owner.getConnection();
                Statement st = c.createStatement()) {
              boolean v21 = mode.equals("V25");
              // off and V20: no settle_seq (the settler never sees those records), no gate
              st.execute(
                  "ALTER TABLE usage_records "
                      + (mode.equals("V20") ? "ENABLE" : "DISABLE")
                      + " TRIGGER usage_records_price");
              st.execute(
                  "ALTER TABLE usage_records "
                      + (v21 ? "ENABLE" : "DISABLE")
                      + " TRIGGER usage_records_settle_gate");
              st.execute(
                  "ALTER TABLE usage_records ALTER COLUMN settle_seq "
                      + (v21 ? "SET DEFAULT nextval('usage_settle_seq')" : "DROP DEFAULT"));
            }
            List<UsageRecord> rs = LedgerThroughput.records("p" + round + mode, records);
            long writeTicks = 0;
            long settleTicks = 0;
            long writeNs = 0;
            long settleNs = 0;
            long settled = 0;
            // V25: the settler's run after every SETTLE_CHUNK records, about what one second of
            // the ledger at this rate gives the settler thread (Billing.SETTLE_EVERY)
            int chunk = mode.equals("V25") ? SETTLE_CHUNK : records;
            for (int from = 0; from < rs.size(); from += chunk) {
              List<UsageRecord> part = rs.subList(from, Math.min(rs.size(), from + chunk));
              long cpu0 = serverTicks(postmaster);
              long t0 = System.nanoTime();
              LedgerThroughput.writeAll(store, part, batch);
              writeNs += System.nanoTime() - t0;
              long cpu1 = serverTicks(postmaster);
              writeTicks += cpu1 - cpu0;
              if (mode.equals("V25")) {
                long t1 = System.nanoTime();
                settled += Settlement.settle(owner);
                settleNs += System.nanoTime() - t1;
                settleTicks += serverTicks(postmaster) - cpu1;
              }
            }
            print(mode + " write", round, records, writeNs, writeTicks);
            if (mode.equals("V25")) {
              if (settled != records) {
                throw new IllegalStateException(
                    "settled " + settled + " charges of " + records + " records");
              }
              print("V25 settle", round, records, settleNs, settleTicks);
              print("V25 total", round, records, writeNs + settleNs, writeTicks + settleTicks);
            }
          }
        }
        try (Connection c = owner.getConnection();
            Statement st = c.createStatement();
            java.sql.ResultSet r =
                st.executeQuery(
                    "SELECT (SELECT count(*) FROM charge_prices), (SELECT count(*) FROM"
                        + " charge_deductions), (SELECT count(*) FROM balance_entries"
                        + " WHERE kind = 'deduction')")) {
          r.next();
          System.out.printf(
              "%npriced %d, deducted %d, credit deductions %d%n",
              r.getLong(1), r.getLong(2), r.getLong(3));
        }
      }
    }
  }

  /** The settler's run after this many records in V25 mode. */
  static final int SETTLE_CHUNK = 2_000;

  static void print(String what, int round, int records, long ns, long ticks) {
    double s = ns / 1e9;
    System.out.printf(
        "| %s | %d | %d | %.2f | %,.0f | %.1f |%n",
        what, round, records, s, records / s, ticks * 1e4 / records);
  }

  /**
   * The function {@code name()} as the migration {@code file} on the class path defines it, as a
   * {@code CREATE OR REPLACE}: V18's or V20's {@code price_and_deduct_charges()}, swapped between
   * rounds on the same database.
   */
  static String function(String file, String name) throws java.io.IOException {
    String sql;
    try (java.io.InputStream in =
        PricingOverhead.class.getResourceAsStream("/db/migration/" + file)) {
      sql = new String(in.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
    }
    int start = sql.indexOf("FUNCTION " + name + "()");
    int end = sql.indexOf("END $$;", start) + "END $$;".length();
    return "CREATE OR REPLACE " + sql.substring(start, end);
  }

  /** utime + stime of the postmaster and all its children, in clock ticks (10 ms). */
  static long serverTicks(long postmaster) throws java.io.IOException {
    long sum = 0;
    try (java.nio.file.DirectoryStream<Path> procs = Files.newDirectoryStream(Path.of("/proc"))) {
      for (Path p : procs) {
        String name = p.getFileName().toString();
        if (!name.chars().allMatch(Character::isDigit)) {
          continue;
        }
        String stat;
        try {
          stat = Files.readString(p.resolve("stat"));
        } catch (java.io.IOException gone) {
          continue;
        }
        String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        if (Long.parseLong(name) == postmaster || Long.parseLong(f[1]) == postmaster) {
          sum += Long.parseLong(f[11]) + Long.parseLong(f[12]);
        }
      }
    }
    return sum;
  }
}
