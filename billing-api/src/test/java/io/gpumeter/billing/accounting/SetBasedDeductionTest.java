package io.gpumeter.billing.accounting;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * V16's and V18's set-based {@code price_and_deduct_charges()} deduct a batch exactly as V7's
 * record-by-record function does (all three under V18's statement-level cache triggers): the same
 * batch (many accounts, two device classes, a model's own price and a class-wide one, two usage
 * months, an allowance that runs out, credits that run out across grants, postpaid and overspend, a
 * voided record, an unpriced record, and the two cases that take the record-by-record path: a grant
 * expiring and a plan changing inside the batch's time span) is inserted in one statement under
 * each function, into two copies of the same accounts, and every row they write is compared.
 */
class SetBasedDeductionTest {
  @TempDir static Path tmp;
  static Database db;

  /** The accounts of one copy: name, postpaid. */
  private static final String[][] ACCOUNTS = {
    {"fast", "false"},
    {"postpaid", "true"},
    {"expiring", "false"},
    {"replan", "false"},
    {"two-months", "true"},
    {"voided", "false"},
    {"no-credit", "false"}
  };

  @BeforeAll
  static void start() {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
  }

  @AfterAll
  static void stop() {
    db.close();
  }

  private static String resource(String name) throws IOException {
    try (InputStream in =
        SetBasedDeductionTest.class.getResourceAsStream("/db/migration/" + name)) {
      return new String(in.readAllBytes(), StandardCharsets.UTF_8);
    }
  }

  /** The function {@code price_and_deduct_charges()} as migration {@code file} defines it. */
  private static String function(String file) throws IOException {
    String sql = resource(file);
    int start = sql.indexOf("FUNCTION price_and_deduct_charges()");
    int end = sql.indexOf("END $$;", start) + "END $$;".length();
    return "CREATE OR REPLACE " + sql.substring(start, end);
  }

  @Test
  void aMultiAccountMultiClassBatchIsDeductedExactlyAsRecordByRecord() throws Exception {
    Instant now = Instant.now().truncatedTo(ChronoUnit.MILLIS);
    Instant t0 = now.plus(Duration.ofMinutes(10));
    try (Connection c = db.maintenanceDataSource().getConnection();
        Statement st = c.createStatement()) {
      st.execute(
          "INSERT INTO price_versions (model, device_class, currency, price_micros_per_s,"
              + " effective) VALUES ('*', 'nvidia-h100-80gb', 'USD', 1000,"
              + " tstzrange('2020-01-01', NULL)), ('m-own', 'nvidia-h100-80gb', 'USD', 1700,"
              + " tstzrange('2020-01-01', NULL)), ('*', 'cpu', 'USD', 7,"
              + " tstzrange('2020-01-01', NULL))");
      st.execute(
          "INSERT INTO plans (name, included_ns) VALUES ('small', 3000000), ('big', 40000000)");
    }
    List<Row> v7 = run("v7", function("V7__money.sql"), now, t0);
    List<Row> v16 = run("v16", function("V16__set_based_deduction.sql"), now, t0);
    assertThat(v16).isEqualTo(v7);
    List<Row> v18 = run("v18", function("V18__set_based_caches.sql"), now, t0);
    assertThat(v18).isEqualTo(v7);
    // V20 (pool weights and overage prices) deducts plans without either exactly as before
    List<Row> v20 = run("v20", function("V20__plan_pools_and_overage.sql"), now, t0);
    assertThat(v20).isEqualTo(v7);
    // V25 settles the same batch after its insert, off the write path: the same rows
    List<Row> v21 = run("v21", null, now, t0);
    assertThat(v21).isEqualTo(v7);
    // V18 keeps V14's cost rollup itself: per account, exactly the unvoided priced charges
    try (Connection c = db.maintenanceDataSource().getConnection();
        Statement st = c.createStatement();
        ResultSet rs =
            st.executeQuery(
                "SELECT a.name, (SELECT count(*) || ' ' || coalesce(sum(p.cost_nmicros), 0)"
                    + "   FROM charge_prices p WHERE p.account_id = a.id AND NOT EXISTS"
                    + "   (SELECT 1 FROM charge_voids v WHERE v.request_id = p.request_id"
                    + "    AND v.applied_ns IS NOT NULL)),"
                    + " (SELECT coalesce(sum(h.requests), 0) || ' ' || coalesce(sum(h.cost_nmicros),"
                    + "   0) FROM cost_hourly h WHERE h.account_id = a.id)"
                    + " FROM accounts a WHERE a.name LIKE 'v18-%' ORDER BY a.name")) {
      int accounts = 0;
      while (rs.next()) {
        assertThat(rs.getString(3)).as(rs.getString(1)).isEqualTo(rs.getString(2));
        accounts++;
      }
      assertThat(accounts).isEqualTo(ACCOUNTS.length);
    }

    // the batch exercised what it is meant to
    List<String> charges =
        v7.stream().filter(r -> r.what().equals("charge")).map(Row::text).toList();
    assertThat(charges).hasSize(ACCOUNTS.length * 29 - 1); // one unpriced each, one voided
    assertThat(charges).anyMatch(t -> t.contains("included=0 ")); // allowance used up
    assertThat(charges).anyMatch(t -> !t.contains("included=0 "));
    assertThat(charges).anyMatch(t -> !t.contains("postpaid=0 "));
    assertThat(charges).anyMatch(t -> !t.endsWith("overspend=0,"));
    List<String> split =
        v7.stream()
            .filter(r -> r.what().equals("deduction"))
            .map(r -> r.text().split(" ")[1])
            .toList();
    assertThat(split)
        .as("a record paid from two grants")
        .hasSizeGreaterThan(new java.util.HashSet<>(split).size());
  }

  /** One compared fact, without the copy's name or ids. */
  record Row(String what, String text) {}

  private static List<Row> run(String copy, String function, Instant now, Instant t0)
      throws Exception {
    try (Connection c = db.maintenanceDataSource().getConnection()) {
      LegacyPricing.install(c, function);
      long[] ids = new long[ACCOUNTS.length];
      for (int i = 0; i < ACCOUNTS.length; i++) {
        try (PreparedStatement ps =
            c.prepareStatement(
                "INSERT INTO accounts (name, currency, postpaid_allowed) VALUES (?, 'USD', ?)"
                    + " RETURNING id")) {
          ps.setString(1, copy + "-" + ACCOUNTS[i][0]);
          ps.setBoolean(2, Boolean.parseBoolean(ACCOUNTS[i][1]));
          try (ResultSet rs = ps.executeQuery()) {
            rs.next();
            ids[i] = rs.getLong(1);
          }
        }
      }
      Instant longAgo = Instant.parse("2020-01-01T00:00:00Z");
      Instant change = t0.plusSeconds(5);
      subscribe(c, ids[0], "small", longAgo, null);
      subscribe(c, ids[2], "small", longAgo, null);
      subscribe(c, ids[3], "small", longAgo, change);
      subscribe(c, ids[3], "big", change, null);
      subscribe(c, ids[4], "big", longAgo, null);
      subscribe(c, ids[5], "small", longAgo, null);
      // amounts in micro-units; a record of 1 ms on an H100 at 1000 micros/s costs 1 micro-unit
      grant(c, ids[0], 40, null);
      grant(c, ids[0], 25, now.plus(Duration.ofDays(400)));
      grant(c, ids[0], 10, now.plus(Duration.ofDays(20)));
      grant(c, ids[1], 5, null); // runs out: postpaid
      grant(c, ids[2], 15, t0.plusSeconds(4)); // expires inside the batch: record by record
      grant(c, ids[2], 500, null);
      grant(c, ids[3], 50, null);
      grant(c, ids[4], 20, now.plus(Duration.ofDays(3)));
      grant(c, ids[4], 20, now.plus(Duration.ofDays(2)));
      grant(c, ids[5], 1000, null);

      // the batch: ~30 records per account over 10 s, request ids in a shuffled insert order
      Random random = new Random(42);
      List<Object[]> records = new ArrayList<>();
      for (int a = 0; a < ACCOUNTS.length; a++) {
        for (int i = 0; i < 30; i++) {
          long ns = 200_000 + random.nextInt(2_000_000);
          String device = random.nextInt(4) == 0 ? "cpu" : "cuda:0";
          String deviceName = device.equals("cpu") ? "cpu" : "NVIDIA H100 80GB HBM3";
          String model = random.nextBoolean() ? "m-own" : "m-other";
          Instant at = t0.plusMillis(random.nextInt(10_000));
          if (a == 4 && i % 3 == 0) {
            at = t0.minus(Duration.ofDays(35)); // last month
          }
          if (i == 7) {
            device = "cuda:0";
            deviceName = "NVIDIA A100"; // no price for the class: not priced
          }
          records.add(
              new Object[] {
                String.format("%02d-%03d", a, i), ids[a], model, device, deviceName, ns, at
              });
        }
      }
      Collections.shuffle(records, random);
      try (PreparedStatement void1 =
          c.prepareStatement(
              "INSERT INTO charge_voids (request_id, reason) VALUES (?, 'client_gone')")) {
        void1.setString(1, copy + "-05-003");
        void1.executeUpdate();
      }
      StringBuilder sql =
          new StringBuilder(
              "INSERT INTO usage_records (request_id, api_key_id, account_id, model, device,"
                  + " device_name, device_uuid, timer_kind, driver_version, cuda_version,"
                  + " weight_policy, device_ns, prefill_ns, decode_ns, prompt_tokens,"
                  + " completion_tokens, queue_ns, steps, status, started_at, finished_at)"
                  + " VALUES ");
      for (int i = 0; i < records.size(); i++) {
        sql.append(i == 0 ? "" : ", ")
            .append(
                "(?, 1, ?, ?, ?, ?, '', 'test', '', '', 'test', ?, ?, 0, 1, 1, 0, 1, 'ok', ?, ?)");
      }
      try (PreparedStatement ps = c.prepareStatement(sql.toString())) {
        int p = 1;
        for (Object[] r : records) {
          ps.setString(p++, copy + "-" + r[0]);
          ps.setLong(p++, (Long) r[1]);
          ps.setString(p++, (String) r[2]);
          ps.setString(p++, (String) r[3]);
          ps.setString(p++, (String) r[4]);
          ps.setLong(p++, (Long) r[5]);
          ps.setLong(p++, (Long) r[5]);
          Instant at = (Instant) r[6];
          ps.setTimestamp(p++, Timestamp.from(at.minusMillis(1)));
          ps.setTimestamp(p++, Timestamp.from(at));
        }
        assertThat(ps.executeUpdate()).isEqualTo(records.size());
      }
      LegacyPricing.finish(c, function);
      return facts(c, copy);
    }
  }

  private static void subscribe(Connection c, long account, String plan, Instant from, Instant to)
      throws SQLException {
    try (PreparedStatement ps =
        c.prepareStatement(
            "INSERT INTO subscriptions (account_id, plan_id, active) SELECT ?, id,"
                + " tstzrange(?, ?, '[)') FROM plans WHERE name = ?")) {
      ps.setLong(1, account);
      ps.setTimestamp(2, Timestamp.from(from));
      ps.setTimestamp(3, to == null ? null : Timestamp.from(to));
      ps.setString(4, plan);
      ps.executeUpdate();
    }
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

  /** Every row the batch wrote for copy {@code copy}, with names and ids made copy-independent. */
  private static List<Row> facts(Connection c, String copy) throws SQLException {
    List<Row> out = new ArrayList<>();
    String prefix = copy + "-";
    query(
        c,
        "SELECT substr(p.request_id, length(?) + 1), substr(a.name, length(?) + 1), p.model,"
            + " p.device_class, p.device_ns, p.price_micros_per_s, p.cost_nmicros"
            + " FROM charge_prices p JOIN accounts a ON a.id = p.account_id"
            + " WHERE p.request_id LIKE ? ORDER BY 1",
        prefix,
        "price",
        out);
    query(
        c,
        "SELECT substr(d.request_id, length(?) + 1), substr(a.name, length(?) + 1), d.kind,"
            + " d.usage_period, d.invoice_period, 'included=' || d.included_ns,"
            + " 'billable=' || d.billable_ns, 'credit=' || d.credit_nmicros,"
            + " 'postpaid=' || d.postpaid_nmicros, 'overspend=' || d.overspend_nmicros || ','"
            + " FROM charge_deductions d JOIN accounts a ON a.id = d.account_id"
            + " WHERE d.request_id LIKE ? ORDER BY 1, 3",
        prefix,
        "charge",
        out);
    // balance entries per account in id order; grants named by their rank in the account
    query(
        c,
        "SELECT substr(a.name, length(?) + 1), substr(e.request_id, length(?) + 1),"
            + " (SELECT count(*) FROM credit_grants g2 WHERE g2.account_id = e.account_id"
            + " AND g2.id <= e.grant_id), e.kind, e.amount_nmicros"
            + " FROM balance_entries e JOIN accounts a ON a.id = e.account_id"
            + " WHERE a.name LIKE ? AND e.kind = 'deduction'"
            + " ORDER BY a.name, e.id",
        prefix,
        "deduction",
        out);
    query(
        c,
        "SELECT substr(a.name, length(?) + 1), (SELECT count(*) FROM credit_grants g2"
            + " WHERE g2.account_id = r.account_id AND g2.id <= r.grant_id), r.remaining_nmicros"
            + " FROM grant_remaining r JOIN accounts a ON a.id = r.account_id"
            + " WHERE a.name LIKE ? ORDER BY 1, 2",
        prefix,
        "remaining",
        out);
    query(
        c,
        "SELECT substr(a.name, length(?) + 1), u.period, u.used_ns"
            + " FROM allowance_used u JOIN accounts a ON a.id = u.account_id"
            + " WHERE a.name LIKE ? ORDER BY 1, 2",
        prefix,
        "allowance",
        out);
    return out;
  }

  private static void query(Connection c, String sql, String prefix, String what, List<Row> out)
      throws SQLException {
    try (PreparedStatement ps = c.prepareStatement(sql)) {
      int n = (int) sql.chars().filter(ch -> ch == '?').count();
      for (int i = 1; i < n; i++) {
        ps.setString(i, prefix);
      }
      ps.setString(n, prefix + "%");
      try (ResultSet rs = ps.executeQuery()) {
        int cols = rs.getMetaData().getColumnCount();
        while (rs.next()) {
          StringBuilder sb = new StringBuilder();
          for (int i = 1; i <= cols; i++) {
            sb.append(i == 1 ? "" : " ").append(rs.getString(i));
          }
          out.add(new Row(what, sb.toString()));
        }
      }
    }
  }
}
