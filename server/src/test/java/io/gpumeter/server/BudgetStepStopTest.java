package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.billing.Budgets;
import io.gpumeter.billing.ChargeCost;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.StepReport;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.math.BigInteger;
import java.net.http.HttpRequest;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.time.Instant;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The per-step stop (docs/DESIGN.md, "Budgets") through the real server on the real demo model and
 * PostgreSQL: an account whose credit runs out while its request runs stops at the next step, says
 * so ({@code finish_reason} {@code insufficient_quota}, in the last streamed chunk too), and is
 * charged for the steps it ran: the stored charge equals the receipt, and the overspend is at most
 * one step.
 *
 * <p>Deterministic run-dry: the credit is a sixth of the cost of a full {@code max_tokens} run
 * measured first, and the model's per-token estimate is fed tiny samples first (through the
 * budget's own {@link Budgets.Meter#observeStep}, down by an eighth per sample), so the reservation
 * is admitted on a small estimate and the measured steps exceed the credit mid-way.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
class BudgetStepStopTest {
  private static final String MODEL = "demo-byte-lm";
  private static final int MAX_TOKENS = 64;

  /** 1 USD per device-second: 1 ns costs 10^6 nano-micro-units. */
  private static final long PRICE = 1_000_000;

  private static final AtomicLong maxStepNs = new AtomicLong();
  private static GpumeterServer server;
  private static Database db;
  private static Client http;
  private static Accounting money;
  private static Budgets.Meter meter;
  private static long fullRunNs;
  private static int fullRunTokens;

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            TestServers.config("stepstop").build(),
            report -> {
              if (report.kind() == StepReport.Kind.CHARGED) {
                maxStepNs.accumulateAndGet(report.measuredNs(), Math::max);
              }
            });
    db = Database.start(server.config().toolDatabaseConfig());
    http = new Client(server.port());
    money = server.billing().accounting();
    // A full run while the model is unpriced (admitted, not charged in money): its device time
    // sizes the credit, its usage names the device.
    money.createAccount("measure", "USD", false);
    CreatedApiKey measure = server.billing().apiKeys().create("measure");
    Reply full = http.post("/v1/completions", measure.plaintext(), body(false));
    assertThat(full.status()).as(full.toString()).isEqualTo(200);
    fullRunNs = full.json().at("/usage/device_time_ns").asLong();
    fullRunTokens = full.json().at("/usage/completion_tokens").asInt();
    assertThat(fullRunTokens).as("the demo model runs to max_tokens").isEqualTo(MAX_TOKENS);
    String device = full.json().at("/usage/device").asText();
    String deviceName = full.json().at("/usage/device_name").asText();
    String cls;
    try (Connection c = db.maintenanceDataSource().getConnection();
        PreparedStatement ps = c.prepareStatement("SELECT device_class(?, ?)")) {
      ps.setString(1, device);
      ps.setString(2, deviceName);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        cls = rs.getString(1);
      }
    }
    money.setPrice(MODEL, cls, "USD", PRICE, Instant.now().minusSeconds(3_600), null);
    meter = server.billing().budgets().meter(MODEL, device, deviceName);
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

  static String body(boolean stream) {
    return "{\"model\":\""
        + MODEL
        + "\",\"prompt\":\"Hello\",\"max_tokens\":"
        + MAX_TOKENS
        + (stream ? ",\"stream\":true,\"stream_options\":{\"include_usage\":true}" : "")
        + "}";
  }

  /** A funded account with a sixth of a full run's cost, and a small per-token estimate. */
  static CreatedApiKey runsDryMidway(String account) {
    money.createAccount(account, "USD", false);
    long credit = Math.max(1, fullRunNs / 6 * PRICE / 1_000_000_000L);
    money.grantCredit(account, "topup", credit, null, "a sixth of a full run");
    // Samples of 1 ns per token: the estimate falls by an eighth of the difference each.
    for (int i = 0; i < 200; i++) {
      meter.observeStep(1, 1);
    }
    assertThat(meter.nsPerToken() * (MAX_TOKENS + 16) * PRICE / 1_000_000_000L)
        .as("the estimate is admitted")
        .isLessThan(credit);
    return server.billing().apiKeys().create(account);
  }

  /** The stored charge equals the receipt, and the overspend is at most one step. */
  static void assertChargedForTheStepsItRan(String account, String requestId, JsonNode usage)
      throws Exception {
    ChargeCost stored =
        await()
            .atMost(Duration.ofSeconds(60))
            .until(() -> server.billing().chargeCost(requestId), java.util.Optional::isPresent)
            .orElseThrow();
    assertThat(usage.get("device_time_ns").asLong()).isEqualTo(stored.deviceNs());
    assertThat(usage.get("cost").asLong()).isEqualTo(stored.roundedMicros());
    assertThat(stored.deviceNs()).isPositive().isLessThan(fullRunNs);
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT status, device_ns, completion_tokens FROM usage_records"
                    + " WHERE request_id = ?")) {
      ps.setString(1, requestId);
      try (ResultSet rs = ps.executeQuery()) {
        assertThat(rs.next()).isTrue();
        assertThat(rs.getString(1)).isEqualTo("ok");
        assertThat(rs.getLong(2)).isEqualTo(stored.deviceNs());
        assertThat(rs.getInt(3)).isEqualTo(usage.get("completion_tokens").asInt());
      }
    }
    // What was charged beyond the credit is at most one step.
    BigInteger granted =
        money.listCredits(account).stream()
            .map(
                g ->
                    BigInteger.valueOf(g.amountMicros())
                        .multiply(BigInteger.valueOf(1_000_000_000L)))
            .reduce(BigInteger.ZERO, BigInteger::add);
    BigInteger over = stored.exactNanoMicros().subtract(granted);
    assertThat(over)
        .as("overspend beyond the credit")
        .isLessThanOrEqualTo(
            BigInteger.valueOf(maxStepNs.get()).multiply(BigInteger.valueOf(PRICE)));
    // It stopped because the next step was not covered: what is left is less than a step.
    assertThat(money.balance(account).exactNanoMicros())
        .as("credit left after the stop")
        .isLessThan(BigInteger.valueOf(maxStepNs.get()).multiply(BigInteger.valueOf(PRICE)));
  }

  @Test
  void aNonStreamedRequestStopsAtTheNextStepAndSaysInsufficientQuota() throws Exception {
    CreatedApiKey key = runsDryMidway("dry-plain");
    Reply r = http.post("/v1/completions", key.plaintext(), body(false));
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    assertThat(r.json().at("/choices/0/finish_reason").asText()).isEqualTo("insufficient_quota");
    int tokens = r.json().at("/usage/completion_tokens").asInt();
    assertThat(tokens).as("stopped mid-way").isPositive().isLessThan(MAX_TOKENS);
    assertThat(r.json().at("/choices/0/text").asText()).isNotEmpty();
    assertChargedForTheStepsItRan("dry-plain", r.json().get("id").asText(), r.json().get("usage"));
  }

  @Test
  void aStreamedRequestsLastChunkSaysInsufficientQuota() throws Exception {
    CreatedApiKey key = runsDryMidway("dry-stream");
    Reply streamed =
        http.send(
            http.request("/v1/completions", key.plaintext())
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body(true)))
                .build());
    assertThat(streamed.status()).isEqualTo(200);
    JsonNode lastChoice = null;
    JsonNode usageEvent = null;
    for (String line : streamed.raw().body().split("\n")) {
      if (line.startsWith("data: {")) {
        JsonNode event = Json.MAPPER.readTree(line.substring(6));
        if (event.path("choices").size() > 0) {
          lastChoice = event.get("choices").get(0);
        }
        if (event.hasNonNull("usage")) {
          usageEvent = event;
        }
      }
    }
    String body = streamed.raw().body();
    assertThat(lastChoice).as(body).isNotNull();
    assertThat(lastChoice.get("finish_reason").asText()).as(body).isEqualTo("insufficient_quota");
    assertThat(body).contains("data: [DONE]");
    assertThat(usageEvent).as(body).isNotNull();
    JsonNode usage = usageEvent.get("usage");
    assertThat(usage.get("completion_tokens").asInt()).isPositive().isLessThan(MAX_TOKENS);
    assertChargedForTheStepsItRan("dry-stream", usageEvent.get("id").asText(), usage);
  }
}
