package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.errors.RateLimitException;
import com.openai.models.completions.CompletionCreateParams;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.ReconciliationReport;
import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.StepReport;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
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
 * Budgets enforced before the work, through the real server on the real model and PostgreSQL: an
 * account with nothing left or a suspended one gets 429 {@code insufficient_quota} and nothing is
 * charged; 32 concurrent requests against a balance too small for all of them overspend at most the
 * stated bound (invariant 22).
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
class BudgetsTest {
  private static final String MODEL = "demo-byte-lm";

  /** 1 USD per device-second. */
  private static final long PRICE = 1_000_000;

  private static final Pattern ESTIMATE = Pattern.compile("estimated (\\d+) ns");

  private static final AtomicLong maxStepNs = new AtomicLong();
  private static final AtomicLong chargedSteps = new AtomicLong();
  private static GpumeterServer server;
  private static Database db;
  private static Client http;
  private static Accounting money;

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            TestServers.config("budgets").build(),
            report -> {
              if (report.kind() == StepReport.Kind.CHARGED) {
                chargedSteps.incrementAndGet();
                maxStepNs.accumulateAndGet(report.measuredNs(), Math::max);
              }
            });
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

  static String body(int maxTokens) {
    return "{\"model\":\"" + MODEL + "\",\"prompt\":\"Hello\",\"max_tokens\":" + maxTokens + "}";
  }

  static void assertInsufficientQuota(Reply r, String says) {
    assertThat(r.status()).as(r.toString()).isEqualTo(429);
    assertThat(r.json().at("/error/code").asText()).isEqualTo("insufficient_quota");
    assertThat(r.json().at("/error/type").asText()).isEqualTo("insufficient_quota");
    assertThat(r.json().at("/error/message").asText()).contains(says);
    assertThat(r.json().at("/error/param").isNull()).isTrue();
  }

  @Test
  void anAccountWithNothingLeftOrSuspendedGets429AndNothingIsChargedOrRun() throws Exception {
    money.createAccount("broke", "USD", false);
    CreatedApiKey broke = server.billing().apiKeys().create("broke");
    money.createAccount("paused", "USD", false);
    money.grantCredit("paused", "topup", 10_000_000, null, "10 USD");
    money.suspend("paused");
    CreatedApiKey paused = server.billing().apiKeys().create("paused");
    long stepsBefore = chargedSteps.get();

    assertInsufficientQuota(
        http.post("/v1/completions", broke.plaintext(), body(8)),
        "allowance and prepaid credits are exhausted");
    assertInsufficientQuota(
        http.post(
            "/v1/chat/completions",
            broke.plaintext(),
            "{\"model\":\"" + MODEL + "\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"),
        "exhausted");
    assertInsufficientQuota(
        http.post(
            "/v1/completions",
            broke.plaintext(),
            "{\"model\":\"" + MODEL + "\",\"prompt\":\"Hello\",\"max_tokens\":8,\"stream\":true}"),
        "exhausted");
    assertInsufficientQuota(http.post("/v1/completions", paused.plaintext(), body(8)), "suspended");

    OpenAIClient openai =
        OpenAIOkHttpClient.builder()
            .apiKey(broke.plaintext())
            .baseUrl("http://127.0.0.1:" + server.port() + "/v1")
            .maxRetries(0)
            .timeout(Duration.ofSeconds(120))
            .build();
    try {
      assertThatThrownBy(
              () ->
                  openai
                      .completions()
                      .create(
                          CompletionCreateParams.builder()
                              .model(MODEL)
                              .prompt("Hello")
                              .maxTokens(8)
                              .build()))
          .isInstanceOfSatisfying(
              RateLimitException.class,
              e -> {
                assertThat(e.statusCode()).isEqualTo(429);
                assertThat(e.code()).hasValue("insufficient_quota");
                assertThat(e.type()).hasValue("insufficient_quota");
              });
    } finally {
      openai.close();
    }
    assertThat(rows(broke.keyId()) + rows(paused.keyId())).as("nothing charged").isZero();
    assertThat(chargedSteps.get()).as("no device time spent").isEqualTo(stepsBefore);
    assertThat(money.balance("paused").micros()).isEqualTo(10_000_000);

    // Funded and active: served, and the charge comes off the credits.
    money.resume("paused");
    CreatedApiKey rich = paused;
    Reply ok =
        await()
            .atMost(Duration.ofSeconds(30))
            .until(
                () -> http.post("/v1/completions", rich.plaintext(), body(8)),
                r -> r.status() == 200);
    long ns = ok.json().at("/usage/device_time_ns").asLong();
    await()
        .atMost(Duration.ofSeconds(30))
        .until(() -> money.balance("paused").micros() < 10_000_000);
    assertThat(ns).isPositive();
  }

  @Test
  void thirtyTwoConcurrentRequestsAgainstASmallBalanceOverspendAtMostOneStepEach()
      throws Exception {
    money.createAccount("small", "USD", false);
    CreatedApiKey small = server.billing().apiKeys().create("small");
    // the refusal states the estimate: a balance of about four of them
    Reply probe = http.post("/v1/completions", small.plaintext(), body(8));
    assertInsufficientQuota(probe, "estimated");
    Matcher m = ESTIMATE.matcher(probe.json().at("/error/message").asText());
    assertThat(m.find()).isTrue();
    long estimateNs = Long.parseLong(m.group(1));
    long credit = Math.max(1, 4 * estimateNs * PRICE / 1_000_000_000L);
    money.grantCredit("small", "topup", credit, null, "four estimates");
    Instant from = Instant.now().truncatedTo(ChronoUnit.MINUTES);

    List<CompletableFuture<Reply>> replies = new ArrayList<>();
    for (int i = 0; i < 32; i++) {
      replies.add(http.postAsync("/v1/completions", small.plaintext(), body(8)));
    }
    int served = 0;
    int refused = 0;
    for (CompletableFuture<Reply> f : replies) {
      Reply r = f.get(5, TimeUnit.MINUTES);
      if (r.status() == 200) {
        served++;
      } else {
        assertInsufficientQuota(r, "exhausted");
        refused++;
      }
    }
    assertThat(served).as("some served").isPositive();
    assertThat(refused).as("some refused").isPositive();
    assertThat(rows(small.keyId())).as("charged exactly the served ones").isEqualTo(served);

    // The bound (invariant 22): overspend <= one step per admitted request, at the price.
    BigDecimal overspend = overspendNanoMicros(small.accountId());
    BigDecimal bound =
        BigDecimal.valueOf(served).multiply(BigDecimal.valueOf(maxStepNs.get() * PRICE));
    assertThat(overspend).as("overspend against the bound " + bound).isLessThanOrEqualTo(bound);
    assertThat(money.verifyBalances()).isEmpty();
    Instant to = Instant.now().truncatedTo(ChronoUnit.MINUTES).plus(1, ChronoUnit.MINUTES);
    await()
        .atMost(Duration.ofSeconds(30))
        .untilAsserted(
            () -> {
              ReconciliationReport rep = server.billing().reconciliation().report(from, to);
              assertThat(rep.totalDriftNs()).as(rep.toString()).isZero();
            });
    System.out.printf(
        "budgets: 32 concurrent, %d served, %d refused, overspend %s of bound %s nano-micro-units%n",
        served, refused, overspend, bound);
  }

  private static final Pattern SAMPLE =
      Pattern.compile("^(gpumeter_budget_\\w+?)(?:\\{reason=\"(\\w+)\"})? (\\S+)$");

  /** The budget counters on /metrics, by name (and {@code name/reason}). */
  static Map<String, Long> budgetCounters() throws Exception {
    Map<String, Long> out = new HashMap<>();
    for (String line : http.get("/metrics", null).raw().body().split("\n")) {
      Matcher m = SAMPLE.matcher(line);
      if (m.matches()) {
        String name = m.group(2) == null ? m.group(1) : m.group(1) + "/" + m.group(2);
        out.put(name, (long) Double.parseDouble(m.group(3)));
      }
    }
    return out;
  }

  static long delta(Map<String, Long> before, Map<String, Long> after, String name) {
    assertThat(after).as("exported: " + name).containsKey(name);
    return after.get(name) - before.getOrDefault(name, 0L);
  }

  @Test
  void reservationAndSettlementCountersMoveByTheRequests() throws Exception {
    money.createAccount("counted", "USD", false);
    money.grantCredit("counted", "topup", 10_000_000, null, "10 USD");
    CreatedApiKey counted = server.billing().apiKeys().create("counted");
    money.createAccount("counted-broke", "USD", false);
    CreatedApiKey broke = server.billing().apiKeys().create("counted-broke");
    money.createAccount("counted-paused", "USD", false);
    money.grantCredit("counted-paused", "topup", 10_000_000, null, "10 USD");
    money.suspend("counted-paused");
    CreatedApiKey paused = server.billing().apiKeys().create("counted-paused");
    Map<String, Long> before = budgetCounters();

    int n = 3;
    long chargedNs = 0;
    for (int i = 0; i < n; i++) {
      Reply r = http.post("/v1/completions", counted.plaintext(), body(2));
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
      chargedNs += r.json().at("/usage/device_time_ns").asLong();
    }
    for (int i = 0; i < 2; i++) {
      assertInsufficientQuota(
          http.post("/v1/completions", broke.plaintext(), body(2)), "exhausted");
    }
    assertInsufficientQuota(http.post("/v1/completions", paused.plaintext(), body(2)), "suspended");

    long charged = chargedNs;
    // a reservation settles once its charge is durable, just after the answer: scrape until then
    await()
        .atMost(Duration.ofSeconds(60))
        .untilAsserted(
            () -> {
              Map<String, Long> after = budgetCounters();
              assertThat(delta(before, after, "gpumeter_budget_reservations_total")).isEqualTo(n);
              assertThat(delta(before, after, "gpumeter_budget_settlements_total")).isEqualTo(n);
              assertThat(delta(before, after, "gpumeter_budget_settled_device_nanoseconds_total"))
                  .isEqualTo(charged);
              assertThat(delta(before, after, "gpumeter_budget_reserved_device_nanoseconds_total"))
                  .isPositive();
              assertThat(delta(before, after, "gpumeter_budget_refusals_total/insufficient_funds"))
                  .isEqualTo(2);
              assertThat(delta(before, after, "gpumeter_budget_refusals_total/suspended"))
                  .isEqualTo(1);
              assertThat(delta(before, after, "gpumeter_budget_refusals_total/billing_unavailable"))
                  .isZero();
            });
  }

  static int rows(long keyId) throws SQLException {
    SettledCharges.settle(db.dataSource());
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT count(*) FROM usage_records WHERE api_key_id = ?")) {
      ps.setLong(1, keyId);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getInt(1);
      }
    }
  }

  static BigDecimal overspendNanoMicros(long account) throws SQLException {
    SettledCharges.settle(db.dataSource());
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT coalesce(sum(overspend_nmicros), 0) FROM charge_deductions"
                    + " WHERE account_id = ?")) {
      ps.setLong(1, account);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getBigDecimal(1);
      }
    }
  }
}
