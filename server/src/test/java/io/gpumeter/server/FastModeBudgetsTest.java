package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.Durability;
import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.StepReport;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.math.BigInteger;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Invariant 22 in FAST ledger mode through the real server, model and PostgreSQL: 32 concurrent
 * requests against a balance of about four of them, with {@code ledger.durability=fast} (a
 * reservation is settled when its charge is queued, not when it commits). The overspend stays
 * within the FAST bound DESIGN.md states: DURABLE's (one step per request running when the funds
 * ran out) plus the cost of the account's charges queued but uncommitted at the lease's last
 * renewal, which with one ledger writer lie in two consecutive ledger batches (a batch is one
 * statement, so its rows share {@code recorded_at}). Nothing is charged twice.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
class FastModeBudgetsTest {
  private static final String MODEL = "demo-byte-lm";

  /** 1 USD per device-second: 10^6 nano-micro-units per device-ns. */
  private static final long PRICE = 1_000_000;

  private static final Pattern ESTIMATE = Pattern.compile("estimated (\\d+) ns");

  private static final AtomicLong maxStepNs = new AtomicLong();
  private static GpumeterServer server;
  private static Database db;
  private static Client http;
  private static Accounting money;

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            TestServers.config("budgets-fast")
                .set("ledger.durability", "fast")
                .set("ledger.writers", "1")
                .build(),
            report -> {
              if (report.kind() == StepReport.Kind.CHARGED) {
                maxStepNs.accumulateAndGet(report.measuredNs(), Math::max);
              }
            });
    assertThat(server.config().durability()).isEqualTo(Durability.FAST);
    db = Database.start(server.config().toolDatabaseConfig());
    http = new Client(server.port());
    money = server.billing().accounting();
    money.setPrice(MODEL, "cpu", "USD", PRICE, Instant.now().minus(1, ChronoUnit.DAYS), null);
  }

  @AfterAll
  static void stop() {
    if (db != null) {
      db.close();
    }
    if (server != null) {
      server.close();
    }
  }

  @Test
  void thirtyTwoConcurrentRequestsInFastModeOverspendAtMostTheStatedBoundAndNothingTwice()
      throws Exception {
    money.createAccount("fast-small", "USD", false);
    CreatedApiKey key = server.billing().apiKeys().create("fast-small");
    Reply probe = http.post("/v1/completions", key.plaintext(), BudgetsTest.body(8));
    BudgetsTest.assertInsufficientQuota(probe, "estimated");
    Matcher m = ESTIMATE.matcher(probe.json().at("/error/message").asText());
    assertThat(m.find()).isTrue();
    long credit = Math.max(1, 4 * Long.parseLong(m.group(1)) * PRICE / 1_000_000_000L);
    money.grantCredit("fast-small", "topup", credit, null, "four estimates");

    List<CompletableFuture<Reply>> replies = new ArrayList<>();
    for (int i = 0; i < 32; i++) {
      replies.add(http.postAsync("/v1/completions", key.plaintext(), BudgetsTest.body(8)));
    }
    Set<String> served = new HashSet<>();
    int refused = 0;
    for (CompletableFuture<Reply> f : replies) {
      Reply r = f.get(5, TimeUnit.MINUTES);
      if (r.status() == 200) {
        assertThat(served.add(r.header("x-request-id"))).as("ids are unique").isTrue();
      } else {
        BudgetsTest.assertInsufficientQuota(r, "exhausted");
        refused++;
      }
    }
    assertThat(served).as("some served").isNotEmpty();
    assertThat(refused).as("some refused").isPositive();

    // FAST: the answers went before their charges committed; wait for the ledger
    await()
        .atMost(Duration.ofSeconds(60))
        .until(
            () ->
                count("SELECT count(*) FROM usage_records WHERE api_key_id = ?", key.keyId())
                    >= served.size());
    assertThat(count("SELECT count(*) FROM usage_records WHERE api_key_id = ?", key.keyId()))
        .as("one row per served request, none for a refused one")
        .isEqualTo(served.size());
    assertThat(storedIds(key.keyId())).as("each answer charged once").isEqualTo(served);
    assertThat(
            count(
                "SELECT count(*) FROM charge_prices p JOIN usage_records u USING (request_id)"
                    + " WHERE u.api_key_id = ?",
                key.keyId()))
        .as("priced once each")
        .isEqualTo(served.size());
    assertThat(
            count(
                "SELECT count(*) FROM charge_deductions WHERE kind = 'charge' AND account_id = ?",
                key.accountId()))
        .as("deducted once each")
        .isEqualTo(served.size());
    assertThat(money.verifyBalances()).isEmpty();

    // The bound (invariant 22, FAST): DURABLE's one step per running request, plus what was
    // queued but uncommitted at the last renewal: at most two consecutive ledger batches' worth
    // of this account's charges.
    BigInteger overspend = overspendNanoMicros(key.accountId());
    BigInteger steps =
        BigInteger.valueOf(served.size())
            .multiply(BigInteger.valueOf(maxStepNs.get()))
            .multiply(BigInteger.valueOf(PRICE));
    List<BigInteger> batches = batchCosts(key.accountId());
    BigInteger twoBatches = BigInteger.ZERO;
    for (int i = 0; i < batches.size(); i++) {
      BigInteger pair =
          batches.get(i).add(i + 1 < batches.size() ? batches.get(i + 1) : BigInteger.ZERO);
      twoBatches = twoBatches.max(pair);
    }
    BigInteger bound = steps.add(twoBatches);
    System.out.printf(
        "budgets FAST: 32 concurrent, %d served, %d refused, %d ledger batches; overspend %s of"
            + " bound %s (steps %s + two batches %s) nano-micro-units%n",
        served.size(), refused, batches.size(), overspend, bound, steps, twoBatches);
    assertThat(overspend)
        .as("overspend against the FAST bound " + bound)
        .isLessThanOrEqualTo(bound);
  }

  /** The account's stored cost per ledger batch, in commit order (one statement: one now()). */
  static List<BigInteger> batchCosts(long account) throws SQLException {
    List<BigInteger> out = new ArrayList<>();
    SettledCharges.settle(db.dataSource());
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT sum(p.cost_nmicros) FROM usage_records u JOIN charge_prices p"
                    + " USING (request_id) WHERE u.account_id = ?"
                    + " GROUP BY u.recorded_at ORDER BY u.recorded_at")) {
      ps.setLong(1, account);
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          out.add(rs.getBigDecimal(1).toBigIntegerExact());
        }
      }
    }
    return out;
  }

  static Set<String> storedIds(long keyId) throws SQLException {
    Set<String> out = new HashSet<>();
    SettledCharges.settle(db.dataSource());
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT request_id FROM usage_records WHERE api_key_id = ?")) {
      ps.setLong(1, keyId);
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          assertThat(out.add(rs.getString(1))).as("stored once: " + rs.getString(1)).isTrue();
        }
      }
    }
    return out;
  }

  static long count(String sql, long arg) throws SQLException {
    SettledCharges.settle(db.dataSource());
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps = c.prepareStatement(sql)) {
      ps.setLong(1, arg);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }

  static BigInteger overspendNanoMicros(long account) throws SQLException {
    SettledCharges.settle(db.dataSource());
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT coalesce(sum(overspend_nmicros), 0) FROM charge_deductions"
                    + " WHERE account_id = ?")) {
      ps.setLong(1, account);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getBigDecimal(1).toBigIntegerExact();
      }
    }
  }
}
