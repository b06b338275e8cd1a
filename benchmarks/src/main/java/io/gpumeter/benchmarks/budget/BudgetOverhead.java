package io.gpumeter.benchmarks.budget;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.BillingConfig;
import io.gpumeter.billing.Budgets;
import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.budget.LeasedBudgets;
import io.gpumeter.billing.db.Database;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.Arrays;

/**
 * The budget's cost per request (issue 10 item 7): admission (reserve) plus settle in memory with a
 * lease present, and separately the lease-renewal path (one database transaction), on a real
 * embedded PostgreSQL. Prints p50/p90/p99 of each, per operation, in microseconds.
 *
 * <p>Usage: {@code BudgetOverhead <dataDir> [reservations] [renewals] [rounds] [pgBinaryCache]}
 */
public final class BudgetOverhead {
  private BudgetOverhead() {}

  public static void main(String[] args) throws Exception {
    Path dir = Path.of(args[0]);
    int n = args.length > 1 ? Integer.parseInt(args[1]) : 200_000;
    int renewals = args.length > 2 ? Integer.parseInt(args[2]) : 500;
    int rounds = args.length > 3 ? Integer.parseInt(args[3]) : 3;
    Files.createDirectories(dir);
    Path binaries = Path.of(args.length > 4 ? args[4] : "billing-api/target/pg-binaries");
    DatabaseConfig config =
        DatabaseConfig.builder()
            .dataDirectory(dir.resolve("pg"))
            .binaryCacheDirectory(binaries.toAbsolutePath())
            .build();
    try (Database db = Database.start(config);
        Billing billing = Billing.open(db, BillingConfig.defaults().withRetention(null))) {
      var money = billing.accounting();
      money.setPrice("bench", "cpu", "USD", 1_000, Instant.parse("2026-01-01T00:00:00Z"), null);
      long account = money.createAccount("bench", "USD", false).id();
      money.grantCredit("bench", "topup", 1_000_000_000_000L, null, "1M USD");
      try (LeasedBudgets budgets =
          new LeasedBudgets(db.dataSource(), "bench", System::nanoTime, false)) {
        Budgets.Meter meter = budgets.meter("bench", "cpu", "bench cpu");
        long estimate = 40 * 1_000_000L; // 40 tokens at 1 ms
        budgets.reserve(meter, account, estimate).get().settle(estimate); // lease it
        for (int round = 1; round <= rounds; round++) {
          long[] t = new long[n];
          for (int i = 0; i < n; i++) {
            long t0 = System.nanoTime();
            Budgets.Reservation r = budgets.reserve(meter, account, estimate).get();
            r.settle(estimate / 2);
            t[i] = System.nanoTime() - t0;
          }
          print("reserve+settle (lease present)", round, t);
          long[] u = new long[renewals];
          for (int i = 0; i < renewals; i++) {
            long t0 = System.nanoTime();
            budgets.renewAll();
            u[i] = System.nanoTime() - t0;
          }
          print("lease renewal (1 account)", round, u);
        }
      }
    }
  }

  private static void print(String what, int round, long[] t) {
    Arrays.sort(t);
    System.out.printf(
        "%-32s round %d  n=%d  p50 %.2f us  p90 %.2f us  p99 %.2f us  max %.2f us%n",
        what,
        round,
        t.length,
        t[t.length / 2] / 1e3,
        t[(int) (t.length * 0.9)] / 1e3,
        t[(int) (t.length * 0.99)] / 1e3,
        t[t.length - 1] / 1e3);
  }
}
