package io.gpumeter.billing.accounting;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.Account;
import io.gpumeter.billing.ConflictException;
import io.gpumeter.billing.Invoice;
import io.gpumeter.billing.InvoiceLine;
import io.gpumeter.billing.InvoiceVerification;
import io.gpumeter.billing.Plan;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import java.io.IOException;
import java.io.InputStream;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.YearMonth;
import java.time.ZoneOffset;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Plans with a class-weighted pool and an overage price (V20), on the real embedded PostgreSQL.
 *
 * <p>The pool arithmetic is checked as a property over seeded random batches: a plan with random
 * weights (some classes unlisted), a random pool and sometimes an overage price; accounts on it
 * (prepaid with credits, postpaid) and one without a plan; records of two device classes. Each
 * batch is deducted twice, once record by record (V7's statement function calling V20's {@code
 * deduct_charge}) and once by V20's set-based function, into two copies of the accounts: every row
 * must be the same, and must equal an independent Java model of the rule (pool in ppm-ns, {@code
 * included = floor(pool_used / weight)}, the rest at the plan's overage price or the price book,
 * credits earliest expiry first, then postpaid or overspend). The invoice's lines add up to its
 * total exactly, {@code invoice verify} recomputes it to the micro-unit, and the balances equal
 * their entries.
 */
class PlanPoolDeductionTest {
  static final long H200_PRICE = 3000; // micro-units per device-second
  static final long CPU_PRICE = 11;

  @TempDir static Path tmp;
  static Database db;
  static Accounting money;

  @BeforeAll
  static void start() throws SQLException {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
    money = new Accounting(db.maintenanceDataSource(), Clock.systemUTC());
    try (Connection c = db.maintenanceDataSource().getConnection();
        Statement st = c.createStatement()) {
      st.execute(
          "INSERT INTO price_versions (model, device_class, currency, price_micros_per_s,"
              + " effective) VALUES ('*', 'nvidia-h200', 'USD', "
              + H200_PRICE
              + ", tstzrange('2020-01-01', NULL)), ('*', 'cpu', 'USD', "
              + CPU_PRICE
              + ", tstzrange('2020-01-01', NULL))");
    }
  }

  @AfterAll
  static void stop() {
    db.close();
  }

  @Test
  void badPlansAreRefusedAndChangeNothing() {
    money.createAccount("prepaid-only", "USD", false);
    List<Plan> before = money.listPlans();
    assertThatThrownBy(() -> money.createPlan("neg", 1, null, Map.of("cpu", -5L)))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("weight of device class 'cpu'")
        .hasMessageContaining("-5");
    assertThatThrownBy(() -> money.createPlan("zero", 1, null, Map.of("cpu", 0L)))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("weight");
    assertThatThrownBy(() -> money.createPlan("unknown", 1, null, Map.of("nvidia-b300", 5L)))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("unknown device class 'nvidia-b300'");
    assertThatThrownBy(() -> money.createPlan("bad", 1, null, Map.of("NVIDIA H200", 5L)))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("device class must look like");
    assertThatThrownBy(() -> money.createPlan("cheap", 1, -1L, Map.of()))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("overage price must be >= 0");
    assertThat(money.listPlans()).isEqualTo(before);

    Plan over = money.createPlan("over", 10, 5000L, Map.of("nvidia-h200", 2_000_000L));
    assertThat(money.listPlans()).contains(over);
    assertThatThrownBy(() -> money.createPlan("over", 10, null, Map.of()))
        .isInstanceOf(ConflictException.class);
    assertThatThrownBy(() -> money.assignPlan("prepaid-only", "over", Instant.now()))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("overage price")
        .hasMessageContaining("does not allow postpaid");
    assertThat(money.currentPlan("prepaid-only")).isEmpty();
  }

  @Test
  void poolArithmeticHoldsOverRandomBatches() throws Exception {
    String rbr = function("V7__money.sql");
    String set = function("V20__plan_pools_and_overage.sql");
    try {
      for (int seed = 1; seed <= 8; seed++) {
        Random random = new Random(seed);
        Map<String, Long> weights = new TreeMap<>();
        if (random.nextInt(4) != 0) {
          weights.put("nvidia-h200", 1 + (long) random.nextInt(6_000_000));
        }
        if (random.nextBoolean()) {
          weights.put("cpu", 1 + (long) random.nextInt(2_000_000));
        }
        long pool = random.nextInt(4) == 0 ? 0 : random.nextInt(80_000_000);
        Long overage = random.nextBoolean() ? null : 1 + (long) random.nextInt(9000);
        Plan plan = money.createPlan("pool-" + seed, pool, overage, weights);
        List<Object[]> batch = batch(random);
        long[] grants = {
          random.nextInt(400), random.nextInt(400), random.nextInt(400)
        }; // micro-units, per account
        List<String> a = run("rbr" + seed, rbr, plan, batch, grants);
        List<String> b = run("set" + seed, set, plan, batch, grants);
        assertThat(b).as("seed %d: set-based == record by record", seed).isEqualTo(a);
        List<String> settled = run("stl" + seed, null, plan, batch, grants);
        assertThat(settled).as("seed %d: settled (V25) == record by record", seed).isEqualTo(a);
        assertThat(b)
            .as("seed %d: the rows == the Java model of the rule", seed)
            .isEqualTo(model("set" + seed, plan, batch, grants));
        for (String copy : new String[] {"rbr" + seed, "set" + seed, "stl" + seed}) {
          for (String acct : new String[] {"pooled", "postpaid", "planless"}) {
            YearMonth month = YearMonth.now(ZoneOffset.UTC);
            Invoice invoice = money.invoice(copy + "-" + acct, month);
            assertThat(invoice.totalMicros())
                .isEqualTo(invoice.lines().stream().mapToLong(InvoiceLine::dueMicros).sum());
            InvoiceVerification v = money.verifyInvoice(copy + "-" + acct, month);
            assertThat(v.problems()).as("%s-%s seed %d", copy, acct, seed).isEmpty();
            assertPoolLines(copy + "-" + acct, invoice, acct.equals("planless") ? null : plan);
          }
        }
      }
      assertThat(money.verifyBalances()).isEmpty();
    } finally {
      try (Connection c = db.maintenanceDataSource().getConnection();
          Statement st = c.createStatement()) {
        st.execute(function("V20__plan_pools_and_overage.sql"));
      }
    }
  }

  /**
   * The invoice's lines give the pool deduction in the pool's unit: each line's ppm-ns is the exact
   * sum of its charges' pool use, between {@code included x w} and that plus {@code w - 1} (only
   * the charge that empties the pool has a sliver), its weighted device-seconds are that / 10^15,
   * and the lines add up to the account's pool use.
   */
  private static void assertPoolLines(String account, Invoice invoice, Plan plan)
      throws SQLException {
    BigInteger sum = BigInteger.ZERO;
    for (InvoiceLine l : invoice.lines()) {
      long w = plan == null ? Plan.UNIT_WEIGHT_PPM : plan.weightPpm(l.deviceClass());
      BigInteger low = BigInteger.valueOf(l.includedNs()).multiply(BigInteger.valueOf(w));
      assertThat(l.poolUsedPpmNs())
          .as("%s %s", account, l)
          .isBetween(low, low.add(BigInteger.valueOf(w - 1)));
      assertThat(new BigDecimal(l.poolUsedWeightedDeviceSeconds()).movePointRight(15))
          .isEqualByComparingTo(new BigDecimal(l.poolUsedPpmNs()));
      sum = sum.add(l.poolUsedPpmNs());
    }
    try (Connection c = db.maintenanceDataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT coalesce(sum(d.pool_used), 0) FROM charge_deductions d"
                    + " JOIN accounts a ON a.id = d.account_id WHERE a.name = ?")) {
      ps.setString(1, account);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        assertThat(sum).as(account).isEqualTo(rs.getBigDecimal(1).toBigIntegerExact());
      }
    }
    if (plan == null) {
      assertThat(sum).isZero();
    }
  }

  /** 40 records per account (index 0..2), two classes, finishing within 10 s from now + 10 min. */
  private static List<Object[]> batch(Random random) {
    Instant t0 = Instant.now().truncatedTo(ChronoUnit.MILLIS).plus(Duration.ofMinutes(10));
    if (!YearMonth.from(t0.atZone(ZoneOffset.UTC))
        .equals(YearMonth.from(t0.plusSeconds(10).atZone(ZoneOffset.UTC)))) {
      t0 = t0.plusSeconds(20); // keep every record in one usage month
    }
    List<Object[]> records = new ArrayList<>();
    for (int a = 0; a < 3; a++) {
      for (int i = 0; i < 40; i++) {
        boolean gpu = random.nextInt(3) != 0;
        long ns = 100_000 + random.nextInt(5_000_000);
        records.add(
            new Object[] {
              String.format("%d-%03d", a, i),
              a,
              gpu ? "cuda:0" : "cpu",
              gpu ? "NVIDIA H200" : "cpu",
              ns,
              t0.plusMillis(random.nextInt(10_000))
            });
      }
    }
    Collections.shuffle(records, random);
    return records;
  }

  private static String resource(String name) throws IOException {
    try (InputStream in =
        PlanPoolDeductionTest.class.getResourceAsStream("/db/migration/" + name)) {
      return new String(in.readAllBytes(), StandardCharsets.UTF_8);
    }
  }

  private static String function(String file) throws IOException {
    String sql = resource(file);
    int start = sql.indexOf("FUNCTION price_and_deduct_charges()");
    int end = sql.indexOf("END $$;", start) + "END $$;".length();
    return "CREATE OR REPLACE " + sql.substring(start, end);
  }

  private static List<String> run(
      String copy, String function, Plan plan, List<Object[]> batch, long[] grants)
      throws Exception {
    Account pooled =
        money.createAccount(copy + "-pooled", "USD", plan.overagePriceMicrosPerSecond() != null);
    Account postpaid = money.createAccount(copy + "-postpaid", "USD", true);
    Account planless = money.createAccount(copy + "-planless", "USD", false);
    long[] ids = {pooled.id(), postpaid.id(), planless.id()};
    Instant longAgo = Instant.parse("2020-01-01T00:00:00Z");
    money.assignPlan(pooled.name(), plan.name(), longAgo);
    money.assignPlan(postpaid.name(), plan.name(), longAgo);
    try (Connection c = db.maintenanceDataSource().getConnection()) {
      for (int a = 0; a < 3; a++) {
        if (grants[a] > 0) {
          grant(c, ids[a], grants[a], null);
          grant(c, ids[a], grants[a] / 2 + 1, Instant.now().plus(Duration.ofDays(30)));
        }
      }
      LegacyPricing.install(c, function);
      StringBuilder sql =
          new StringBuilder(
              "INSERT INTO usage_records (request_id, api_key_id, account_id, model, device,"
                  + " device_name, device_uuid, timer_kind, driver_version, cuda_version,"
                  + " weight_policy, device_ns, prefill_ns, decode_ns, prompt_tokens,"
                  + " completion_tokens, queue_ns, steps, status, started_at, finished_at)"
                  + " VALUES ");
      for (int i = 0; i < batch.size(); i++) {
        sql.append(i == 0 ? "" : ", ")
            .append(
                "(?, 1, ?, 'm', ?, ?, '', 'test', '', '', 'test', ?, ?, 0, 1, 1, 0, 1, 'ok', ?,"
                    + " ?)");
      }
      try (PreparedStatement ps = c.prepareStatement(sql.toString())) {
        int p = 1;
        for (Object[] r : batch) {
          Instant at = (Instant) r[5];
          ps.setString(p++, copy + "-" + r[0]);
          ps.setLong(p++, ids[(Integer) r[1]]);
          ps.setString(p++, (String) r[2]);
          ps.setString(p++, (String) r[3]);
          ps.setLong(p++, (Long) r[4]);
          ps.setLong(p++, (Long) r[4]);
          ps.setTimestamp(p++, Timestamp.from(at.minusMillis(1)));
          ps.setTimestamp(p++, Timestamp.from(at));
        }
        assertThat(ps.executeUpdate()).isEqualTo(batch.size());
      }
      LegacyPricing.finish(c, function);
      List<String> out = new ArrayList<>();
      try (PreparedStatement ps =
          c.prepareStatement(
              "SELECT substr(d.request_id, length(?) + 1), d.included_ns, d.billable_ns,"
                  + " d.pool_used, d.unit_price_micros_per_s, d.credit_nmicros,"
                  + " d.postpaid_nmicros, d.overspend_nmicros"
                  + " FROM charge_deductions d WHERE d.request_id LIKE ? ORDER BY 1")) {
        ps.setString(1, copy + "-");
        ps.setString(2, copy + "-%");
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            out.add(
                rs.getString(1)
                    + " included="
                    + rs.getLong(2)
                    + " billable="
                    + rs.getLong(3)
                    + " pool="
                    + rs.getBigDecimal(4).toBigIntegerExact()
                    + " unit="
                    + rs.getString(5)
                    + " credit="
                    + rs.getBigDecimal(6).toBigIntegerExact()
                    + " postpaid="
                    + rs.getBigDecimal(7).toBigIntegerExact()
                    + " overspend="
                    + rs.getBigDecimal(8).toBigIntegerExact());
          }
        }
      }
      return out;
    }
  }

  /** The rule, in Java: what {@link #run} must read back for {@code copy}. */
  private static List<String> model(String copy, Plan plan, List<Object[]> batch, long[] grants) {
    BigInteger million = BigInteger.valueOf(1_000_000);
    BigInteger nano = BigInteger.valueOf(1_000_000_000);
    Map<String, String> out = new TreeMap<>();
    for (int a = 0; a < 3; a++) {
      boolean onPlan = a < 2;
      boolean postpaidAllowed = a == 1 || (a == 0 && plan.overagePriceMicrosPerSecond() != null);
      BigInteger poolLeft =
          onPlan ? BigInteger.valueOf(plan.includedNs()).multiply(million) : BigInteger.ZERO;
      // grants: earliest expiry first (the 30-day one), no expiry last
      List<BigInteger> credit = new ArrayList<>();
      if (grants[a] > 0) {
        credit.add(BigInteger.valueOf(grants[a] / 2 + 1).multiply(nano));
        credit.add(BigInteger.valueOf(grants[a]).multiply(nano));
      }
      Map<String, Object[]> mine = new TreeMap<>();
      for (Object[] r : batch) {
        if ((Integer) r[1] == a) {
          mine.put((String) r[0], r);
        }
      }
      for (Map.Entry<String, Object[]> e : mine.entrySet()) {
        Object[] r = e.getValue();
        String cls = r[2].equals("cpu") ? "cpu" : "nvidia-h200";
        long ns = (Long) r[4];
        long book = cls.equals("cpu") ? CPU_PRICE : H200_PRICE;
        long w = onPlan ? plan.weightPpm(cls) : Plan.UNIT_WEIGHT_PPM;
        BigInteger used = BigInteger.ZERO;
        long included = 0;
        Long unit = onPlan ? plan.overagePriceMicrosPerSecond() : null;
        if (onPlan) {
          used = BigInteger.valueOf(ns).multiply(BigInteger.valueOf(w)).min(poolLeft);
          poolLeft = poolLeft.subtract(used);
          included = used.divide(BigInteger.valueOf(w)).longValueExact();
        }
        BigInteger need =
            BigInteger.valueOf(ns - included)
                .multiply(BigInteger.valueOf(unit == null ? book : unit));
        BigInteger paid = BigInteger.ZERO;
        for (int g = 0; g < credit.size() && need.signum() > 0; g++) {
          BigInteger take = credit.get(g).min(need);
          credit.set(g, credit.get(g).subtract(take));
          need = need.subtract(take);
          paid = paid.add(take);
        }
        out.put(
            e.getKey(),
            e.getKey()
                + " included="
                + included
                + " billable="
                + (ns - included)
                + " pool="
                + used
                + " unit="
                + unit
                + " credit="
                + paid
                + " postpaid="
                + (postpaidAllowed ? need : BigInteger.ZERO)
                + " overspend="
                + (postpaidAllowed ? BigInteger.ZERO : need));
      }
    }
    return new ArrayList<>(new LinkedHashMap<>(out).values());
  }

  private static void grant(Connection c, long account, long micros, Instant expires)
      throws SQLException {
    try (PreparedStatement ps =
        c.prepareStatement(
            "WITH g AS (INSERT INTO credit_grants (account_id, source, amount_micros, expires_at)"
                + " VALUES (?, 'topup', ?, ?) RETURNING id, account_id, amount_micros)"
                + " INSERT INTO balance_entries (account_id, grant_id, kind, amount_nmicros)"
                + " SELECT account_id, id, 'topup', amount_micros::numeric * 1000000000 FROM g")) {
      ps.setLong(1, account);
      ps.setLong(2, micros);
      ps.setTimestamp(3, expires == null ? null : Timestamp.from(expires));
      ps.executeUpdate();
    }
  }
}
