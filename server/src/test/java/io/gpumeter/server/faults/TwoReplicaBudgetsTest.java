package io.gpumeter.server.faults;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.ReconciliationReport;
import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.keys.ApiKeys;
import io.gpumeter.billing.reconcile.Reconciliation;
import io.gpumeter.server.TestServers;
import io.gpumeter.server.faults.FaultSupport.ServerProcess;
import java.math.BigDecimal;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Invariant 22 with two server processes on one PostgreSQL: 32 concurrent requests (16 on each)
 * against a balance of about four estimates. Refused ones get 429 {@code insufficient_quota}, the
 * served ones are charged once, the overspend stays within the same bound as on one replica (one
 * step per served request, the step bounded by the longest either process measured) and
 * reconciliation drift is 0.
 */
class TwoReplicaBudgetsTest {
  private static final long PRICE = 1_000_000; // 1 USD per device-second
  private static final Pattern ESTIMATE = Pattern.compile("estimated (\\d+) ns");

  @TempDir Path tmp;

  private final HttpClient http =
      HttpClient.newBuilder()
          .version(HttpClient.Version.HTTP_1_1)
          .connectTimeout(Duration.ofSeconds(5))
          .build();

  @Test
  @Timeout(480)
  void twoReplicasTogetherOverspendAtMostOneStepPerRequest() throws Exception {
    int pgPort = FaultSupport.freePort();
    Path pgDir = tmp.resolve("pg");
    Database pg = FaultSupport.startPostgres(pgDir, pgPort);
    String dbUrl = FaultSupport.jdbcUrl(pgDir, pgPort);
    List<ServerProcess> processes = new ArrayList<>();
    try {
      Accounting money = new Accounting(pg.dataSource(), Clock.systemUTC());
      money.setPrice(
          FaultSupport.MODEL, "cpu", "USD", PRICE, Instant.now().minus(1, ChronoUnit.DAYS), null);
      long account = money.createAccount("shared", "USD", false).id();
      CreatedApiKey key = new ApiKeys(pg.dataSource()).create("shared");

      ServerProcess one = ServerProcess.start("budget-1", settings("budget-1", dbUrl), "serve");
      processes.add(one);
      ServerProcess two = ServerProcess.start("budget-2", settings("budget-2", dbUrl), "serve");
      processes.add(two);
      int p1 = one.awaitReady(Duration.ofMinutes(3));
      int p2 = two.awaitReady(Duration.ofMinutes(3));

      // With no credits the refusal states the estimate; grant about four of them.
      HttpResponse<String> probe = post(p1, key.plaintext()).get(60, TimeUnit.SECONDS);
      assertThat(probe.statusCode()).as(probe.body()).isEqualTo(429);
      Matcher m = ESTIMATE.matcher(probe.body());
      assertThat(m.find()).as(probe.body()).isTrue();
      long estimateNs = Long.parseLong(m.group(1));
      money.grantCredit(
          "shared", "topup", Math.max(1, 4 * estimateNs * PRICE / 1_000_000_000L), null, "4x");
      Instant from = Instant.now().truncatedTo(ChronoUnit.MINUTES);

      List<CompletableFuture<HttpResponse<String>>> replies = new ArrayList<>();
      for (int i = 0; i < 32; i++) {
        replies.add(post(i % 2 == 0 ? p1 : p2, key.plaintext()));
      }
      int served = 0;
      int refused = 0;
      for (CompletableFuture<HttpResponse<String>> f : replies) {
        HttpResponse<String> r = f.get(5, TimeUnit.MINUTES);
        if (r.statusCode() == 200) {
          served++;
        } else {
          assertThat(r.statusCode()).as(r.body()).isEqualTo(429);
          JsonNode e = FaultSupport.MAPPER.readTree(r.body()).get("error");
          assertThat(e.get("code").asText()).isEqualTo("insufficient_quota");
          assertThat(e.get("type").asText()).isEqualTo("insufficient_quota");
          refused++;
        }
      }
      assertThat(served).isPositive();
      assertThat(refused).isPositive();
      long longestStepNs = Math.max(longestStepNs(p1), longestStepNs(p2));
      assertThat(longestStepNs).as("the served requests' steps were measured").isPositive();
      one.terminate();
      two.terminate();
      assertThat(one.waitFor(Duration.ofSeconds(90))).isIn(0, 143);
      assertThat(two.waitFor(Duration.ofSeconds(90))).isIn(0, 143);

      long[] charged = charged(pg, key.keyId());
      assertThat(charged[0]).as("one charge per served request").isEqualTo(served);
      // The bound of invariant 22: one step per request, a step's share at most the longest step
      // either process measured (and at most its request's whole device time).
      long stepNs = Math.min(longestStepNs, charged[1]);
      BigDecimal bound = BigDecimal.valueOf(served).multiply(BigDecimal.valueOf(stepNs * PRICE));
      BigDecimal overspend = overspend(pg, account);
      assertThat(overspend).as("overspend within " + bound).isLessThanOrEqualTo(bound);
      assertThat(money.verifyBalances()).isEmpty();
      Instant to = Instant.now().truncatedTo(ChronoUnit.MINUTES).plus(1, ChronoUnit.MINUTES);
      ReconciliationReport rep = new Reconciliation(pg.dataSource()).report(from, to);
      assertThat(rep.totalDriftNs()).as(rep.toString()).isZero();
      System.out.printf(
          "two-replica budgets: %d served, %d refused, longest step <= %d ns, overspend %s of bound"
              + " %s%n",
          served, refused, longestStepNs, overspend, bound);
    } finally {
      for (ServerProcess p : processes) {
        p.kill();
      }
      pg.close();
    }
  }

  private CompletableFuture<HttpResponse<String>> post(int port, String key) {
    return http.sendAsync(
        HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/v1/completions"))
            .header("Authorization", "Bearer " + key)
            .header("Content-Type", "application/json")
            .timeout(Duration.ofSeconds(120))
            .POST(HttpRequest.BodyPublishers.ofString(FaultSupport.completion("Hello", 8)))
            .build(),
        HttpResponse.BodyHandlers.ofString());
  }

  private static final Pattern STEP_BUCKET =
      Pattern.compile("^gpumeter_step_duration_seconds_bucket\\{.*le=\"([^\"]+)\".*} (\\S+)$");

  /**
   * An upper bound of the longest step the server on {@code port} measured: the upper bound of the
   * highest non-empty bucket of {@code gpumeter_step_duration_seconds} (all models and devices), or
   * {@link Long#MAX_VALUE} when a step fell past the largest finite bucket.
   */
  private long longestStepNs(int port) throws Exception {
    HttpResponse<String> r =
        http.send(
            HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/metrics"))
                .timeout(Duration.ofSeconds(30))
                .build(),
            HttpResponse.BodyHandlers.ofString());
    assertThat(r.statusCode()).isEqualTo(200);
    java.util.TreeMap<Double, Double> cumulative = new java.util.TreeMap<>();
    for (String line : r.body().split("\n")) {
      Matcher m = STEP_BUCKET.matcher(line);
      if (m.matches()) {
        double le =
            m.group(1).equals("+Inf") ? Double.POSITIVE_INFINITY : Double.parseDouble(m.group(1));
        cumulative.merge(le, Double.parseDouble(m.group(2)), Double::sum);
      }
    }
    assertThat(cumulative).as("step histogram exported").isNotEmpty();
    double total = cumulative.lastEntry().getValue();
    if (total == 0) {
      return 0; // this replica ran no step (every request it got was refused)
    }
    for (Map.Entry<Double, Double> e : cumulative.entrySet()) {
      if (e.getValue() >= total) {
        // past the largest bucket (over 1 s, a very loaded machine): no bound from here, so the
        // request's own device time bounds its step
        return e.getKey().isInfinite() ? Long.MAX_VALUE : Math.round(e.getKey() * 1e9);
      }
    }
    throw new AssertionError("unreachable: the +Inf bucket holds every step");
  }

  private Map<String, String> settings(String name, String dbUrl) {
    return Map.of(
        "host", "127.0.0.1",
        "port", "0",
        "device", "cpu",
        "models.dir", TestServers.repoRoot().resolve("models").toString(),
        "data.dir", tmp.resolve(name).toString(),
        "db.url", dbUrl,
        "db.user", "postgres",
        "shutdown.grace", "5s");
  }

  /** {count, max device_ns} of the key's records. */
  private static long[] charged(Database pg, long keyId) throws Exception {
    io.gpumeter.server.SettledCharges.settle(pg.dataSource());
    try (Connection c = pg.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT count(*), coalesce(max(device_ns), 0) FROM usage_records"
                    + " WHERE api_key_id = ?")) {
      ps.setLong(1, keyId);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return new long[] {rs.getLong(1), rs.getLong(2)};
      }
    }
  }

  private static BigDecimal overspend(Database pg, long account) throws Exception {
    io.gpumeter.server.SettledCharges.settle(pg.dataSource());
    try (Connection c = pg.dataSource().getConnection();
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
