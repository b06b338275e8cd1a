package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.ChargeCost;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.PriceVersion;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.net.http.HttpRequest;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Receipts (issue 11) against a real server, the real demo model and embedded PostgreSQL: the cost
 * in {@code usage} and in {@code x-gpumeter-cost-micros} equals the stored charge's cost for 100
 * requests, in chat and in the final streamed usage chunk too; an idempotent replay carries the
 * receipt headers; {@code x-ratelimit-*} headers show the cached balance and follow it; spend
 * metrics per account with bounded labels.
 */
@Timeout(value = 15, unit = TimeUnit.MINUTES)
class ReceiptsTest {
  /** An odd price, so that costs have fractions of a micro-unit to round. */
  private static final long PRICE = 3_333_337;

  // ample: the budget refuses a request whose estimate the credit cannot cover (invariant 22),
  // and a hundred requests on a loaded machine can cost over 50 USD at this price
  private static final long CREDIT_MICROS = 10_000_000_000L;

  private static GpumeterServer server;
  private static Database db;
  private static Client client;
  private static CreatedApiKey payer; // priced, with credit
  private static CreatedApiKey optIn; // named in metrics.spend_accounts
  private static CreatedApiKey small1; // beyond the one promoted account: "other"
  private static CreatedApiKey small2;
  private static PriceVersion price;

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            TestServers.config("receipts")
                .set("billing.balance_cache_ttl", "200ms")
                .set("metrics.spend_accounts", "optin")
                .set("metrics.spend_top_accounts", "1")
                .build(),
            StepListener.NONE);
    client = new Client(server.port());
    var keys = server.billing().apiKeys();
    payer = keys.create("payer");
    optIn = keys.create("optin");
    small1 = keys.create("small1");
    small2 = keys.create("small2");
    db = Database.start(server.config().toolDatabaseConfig());
    var accounting = server.billing().accounting();
    // the device the demo model runs on, and its class as the SQL function names it
    Reply unpriced =
        client.post(
            "/v1/completions",
            small2.plaintext(),
            "{\"model\":\"demo-byte-lm\",\"prompt\":\"x\",\"max_tokens\":1}");
    assertThat(unpriced.status()).as(unpriced.toString()).isEqualTo(200);
    assertThat(unpriced.json().at("/usage/cost").isNull()).isTrue(); // no price yet
    assertThat(unpriced.header("x-gpumeter-cost-micros")).isNull();
    String device = unpriced.json().at("/usage/device").asText();
    String deviceName = unpriced.json().at("/usage/device_name").asText();
    String cls;
    try (var c = db.maintenanceDataSource().getConnection();
        var ps = c.prepareStatement("SELECT device_class(?, ?)")) {
      ps.setString(1, device);
      ps.setString(2, deviceName);
      try (var rs = ps.executeQuery()) {
        rs.next();
        cls = rs.getString(1);
      }
    }
    price = accounting.setPrice("*", cls, "USD", PRICE, Instant.now().minusSeconds(3_600), null);
    accounting.grantCredit("payer", "topup", CREDIT_MICROS, null, "receipts test");
    // the budget admits a priced request only when the account can pay for it (invariant 22)
    for (String account : List.of("optin", "small1", "small2")) {
      accounting.grantCredit(account, "topup", CREDIT_MICROS, null, "receipts test");
    }
    // the price reaches the receipt cache through the database's notification
    UsageRecord probe = record(device, deviceName);
    await()
        .atMost(Duration.ofSeconds(60))
        .until(() -> server.billing().receiptCost(probe, "USD").isPresent());
  }

  private static UsageRecord record(String device, String deviceName) {
    Instant now = Instant.now();
    return new UsageRecord(
        "probe",
        payer.keyId(),
        payer.accountId(),
        "demo-byte-lm",
        new TimerInfo("test", device, deviceName, "", "", ""),
        "test",
        1,
        1,
        0,
        1,
        1,
        0,
        1,
        UsageStatus.OK,
        now,
        now,
        "probe",
        0,
        0);
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

  private static ChargeCost stored(String requestId) {
    return server.billing().chargeCost(requestId).orElseThrow();
  }

  private static void assertReceipt(JsonNode usage, String costHeader, String requestId) {
    ChargeCost c = stored(requestId);
    assertThat(usage.get("cost").isIntegralNumber()).as(usage.toString()).isTrue();
    assertThat(usage.get("cost").asLong()).isEqualTo(c.roundedMicros());
    assertThat(usage.get("price_version").asLong())
        .isEqualTo(price.id())
        .isEqualTo(c.priceVersionId());
    assertThat(usage.get("currency").asText()).isEqualTo("usd");
    assertThat(new java.math.BigDecimal(usage.get("cost_exact").asText()).movePointRight(15))
        .isEqualByComparingTo(new java.math.BigDecimal(c.exactNanoMicros()));
    if (costHeader != null) {
      assertThat(Long.parseLong(costHeader)).isEqualTo(c.roundedMicros());
    }
  }

  @Test
  void theReceiptEqualsTheStoredChargeCostForAHundredRequests() throws Exception {
    List<CompletableFuture<Reply>> replies = new ArrayList<>();
    for (int i = 0; i < 100; i++) {
      replies.add(
          client.postAsync(
              "/v1/completions",
              payer.plaintext(),
              "{\"model\":\"demo-byte-lm\",\"prompt\":\"Receipt " + i + "\",\"max_tokens\":3}"));
    }
    for (CompletableFuture<Reply> f : replies) {
      Reply r = f.get(5, TimeUnit.MINUTES);
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
      String id = r.json().get("id").asText();
      JsonNode usage = r.json().get("usage");
      assertThat(Long.parseLong(r.header("x-gpumeter-device-time-ns")))
          .isEqualTo(stored(id).deviceNs());
      assertReceipt(usage, r.header("x-gpumeter-cost-micros"), id);
      long credit = Long.parseLong(r.header("x-ratelimit-remaining-credit-micros"));
      assertThat(credit).isBetween(0L, CREDIT_MICROS);
      assertThat(r.header("x-ratelimit-remaining-allowance-device-ns")).isEqualTo("0");
    }
  }

  @Test
  void chatAndTheFinalStreamedUsageChunkCarryTheStoredCost() throws Exception {
    Reply chat =
        client.post(
            "/v1/chat/completions",
            payer.plaintext(),
            "{\"model\":\"demo-byte-lm\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                + "\"max_tokens\":3}");
    assertThat(chat.status()).as(chat.toString()).isEqualTo(200);
    assertReceipt(
        chat.json().get("usage"),
        chat.header("x-gpumeter-cost-micros"),
        chat.json().get("id").asText());

    for (String path : List.of("/v1/chat/completions", "/v1/completions")) {
      String body =
          path.endsWith("chat/completions")
              ? "{\"model\":\"demo-byte-lm\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
              : "{\"model\":\"demo-byte-lm\",\"prompt\":\"Hi\",";
      Reply streamed =
          client.send(
              client
                  .request(path, payer.plaintext())
                  .header("Content-Type", "application/json")
                  .POST(
                      HttpRequest.BodyPublishers.ofString(
                          body
                              + "\"max_tokens\":3,\"stream\":true,"
                              + "\"stream_options\":{\"include_usage\":true}}"))
                  .build());
      assertThat(streamed.status()).isEqualTo(200);
      JsonNode last = null;
      for (String line : streamed.raw().body().split("\n")) {
        if (line.startsWith("data: {")) {
          JsonNode event = Json.MAPPER.readTree(line.substring(6));
          if (event.hasNonNull("usage")) {
            last = event;
          }
        }
      }
      assertThat(last).as(streamed.raw().body()).isNotNull();
      assertReceipt(last.get("usage"), null, last.get("id").asText());
    }
  }

  /**
   * A streamed answer (issue 11): its head carries the remaining funds also for an account whose
   * balance was never read before (the head waits for the load) and declares its trailers; the last
   * chunk's trailers carry the device time and the cost, equal to the usage event and to the stored
   * charge; the official client still reads such a stream.
   */
  @Test
  void aStreamedAnswerCarriesTheFundsInItsHeadAndItsCostAsTrailers() throws Exception {
    var accounting = server.billing().accounting();
    for (String path : List.of("/v1/completions", "/v1/chat/completions")) {
      String account = "stream-" + (path.contains("chat") ? "chat" : "text");
      CreatedApiKey key = server.billing().apiKeys().create(account);
      accounting.grantCredit(account, "topup", CREDIT_MICROS, null, "streamed receipts");
      String body =
          (path.contains("chat")
                  ? "{\"model\":\"demo-byte-lm\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                  : "{\"model\":\"demo-byte-lm\",\"prompt\":\"Hi\",")
              + "\"max_tokens\":4,\"stream\":true,\"stream_options\":{\"include_usage\":true}}";
      RawChunkedHttp.Response r =
          RawChunkedHttp.post(server.port(), path, key.plaintext(), body, 120_000);
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
      assertThat(r.headers())
          .as("the head of a fresh account's first stream")
          .containsEntry("x-ratelimit-remaining-credit-micros", Long.toString(CREDIT_MICROS))
          .containsEntry("x-ratelimit-remaining-allowance-device-ns", "0")
          .containsEntry("trailer", "x-gpumeter-device-time-ns, x-gpumeter-cost-micros")
          .doesNotContainKey("x-gpumeter-cost-micros");
      JsonNode last = null;
      for (String line : r.body().split("\n")) {
        if (line.startsWith("data: {")) {
          JsonNode event = Json.MAPPER.readTree(line.substring(6));
          if (event.hasNonNull("usage")) {
            last = event;
          }
        }
      }
      assertThat(last).as(r.body()).isNotNull();
      assertThat(r.body()).endsWith("data: [DONE]\n\n");
      String id = last.get("id").asText();
      ChargeCost c = stored(id);
      assertThat(Long.parseLong(r.trailers().get("x-gpumeter-device-time-ns")))
          .as(r.trailers().toString())
          .isEqualTo(c.deviceNs())
          .isEqualTo(last.at("/usage/device_time_ns").asLong());
      assertReceipt(last.get("usage"), r.trailers().get("x-gpumeter-cost-micros"), id);
    }

    // the official client reads a stream with trailers (OkHttp consumes them)
    String account = "stream-client";
    CreatedApiKey key = server.billing().apiKeys().create(account);
    accounting.grantCredit(account, "topup", CREDIT_MICROS, null, "streamed receipts");
    com.openai.client.OpenAIClient openai =
        com.openai.client.okhttp.OpenAIOkHttpClient.builder()
            .apiKey(key.plaintext())
            .baseUrl("http://127.0.0.1:" + server.port() + "/v1")
            .maxRetries(0)
            .timeout(Duration.ofSeconds(120))
            .build();
    try {
      List<com.openai.models.completions.Completion> chunks;
      try (var s =
          openai
              .completions()
              .createStreaming(
                  com.openai.models.completions.CompletionCreateParams.builder()
                      .model("demo-byte-lm")
                      .prompt("Hi")
                      .maxTokens(4)
                      .streamOptions(
                          com.openai.models.chat.completions.ChatCompletionStreamOptions.builder()
                              .includeUsage(true)
                              .build())
                      .build())) {
        chunks = s.stream().toList();
      }
      var last = chunks.get(chunks.size() - 1);
      var usage = last.usage().orElseThrow();
      assertThat(usage._additionalProperties().get("cost").convert(Long.class))
          .isEqualTo(stored(last.id()).roundedMicros());
    } finally {
      openai.close();
    }
  }

  @Test
  void anIdempotentReplayCarriesTheReceiptHeaders() throws Exception {
    Map<String, Reply> replies = new HashMap<>();
    for (String attempt : List.of("first", "replay")) {
      replies.put(
          attempt,
          client.send(
              client
                  .request("/v1/completions", payer.plaintext())
                  .header("Content-Type", "application/json")
                  .header("Idempotency-Key", "receipt-replay-1")
                  .POST(
                      HttpRequest.BodyPublishers.ofString(
                          "{\"model\":\"demo-byte-lm\",\"prompt\":\"Once\",\"max_tokens\":3}"))
                  .build()));
    }
    Reply first = replies.get("first");
    Reply replay = replies.get("replay");
    assertThat(first.status()).isEqualTo(200);
    assertThat(replay.status()).isEqualTo(200);
    assertThat(replay.header("idempotent-replayed")).isEqualTo("true");
    String id = first.json().get("id").asText();
    assertThat(replay.json().get("id").asText()).isEqualTo(id);
    assertThat(replay.header("x-gpumeter-device-time-ns"))
        .isEqualTo(first.header("x-gpumeter-device-time-ns"))
        .isEqualTo(Long.toString(stored(id).deviceNs()));
    assertThat(replay.header("x-gpumeter-cost-micros"))
        .isEqualTo(first.header("x-gpumeter-cost-micros"))
        .isEqualTo(Long.toString(stored(id).roundedMicros()));
    // the funds left, from the cached balance as of the replay: never above the credit granted,
    // never below what the database holds now (the cache lags, charges only lower the balance)
    long balance = server.billing().accounting().balance(payer.accountId()).micros();
    assertThat(replay.header("x-ratelimit-remaining-credit-micros")).isNotNull();
    assertThat(Long.parseLong(replay.header("x-ratelimit-remaining-credit-micros")))
        .isLessThanOrEqualTo(CREDIT_MICROS)
        .isGreaterThanOrEqualTo(balance);
    assertThat(replay.header("x-ratelimit-remaining-allowance-device-ns")).isEqualTo("0");
  }

  @Test
  void theRemainingCreditHeaderFollowsTheBalanceWithinTheCacheTtl() throws Exception {
    Reply warm =
        client.post(
            "/v1/completions",
            payer.plaintext(),
            "{\"model\":\"demo-byte-lm\",\"prompt\":\"a\",\"max_tokens\":2}");
    assertThat(warm.status()).isEqualTo(200);
    // once the cache reloads (200 ms ttl), the header equals the stored balance, net of every
    // charge
    await()
        .atMost(Duration.ofSeconds(60))
        .until(
            () -> {
              long balance = server.billing().accounting().balance(payer.accountId()).micros();
              Reply r =
                  client.post(
                      "/v1/completions",
                      payer.plaintext(),
                      "{\"model\":\"demo-byte-lm\",\"prompt\":\"b\",\"max_tokens\":1}");
              long shown = Long.parseLong(r.header("x-ratelimit-remaining-credit-micros"));
              return shown < CREDIT_MICROS && shown >= balance;
            });
  }

  private static final Pattern SERIES =
      Pattern.compile("^gpumeter_account_device_nanoseconds_total\\{account=\"([^\"]+)\"} (\\S+)$");

  @Test
  void spendMetricsHaveBoundedLabelsAndAddUpToTheDurableCharges() throws Exception {
    for (CreatedApiKey k : List.of(optIn, small1, small2)) {
      Reply r =
          client.post(
              "/v1/completions",
              k.plaintext(),
              "{\"model\":\"demo-byte-lm\",\"prompt\":\"m\",\"max_tokens\":2}");
      assertThat(r.status()).isEqualTo(200);
    }
    Reply payerReply =
        client.post(
            "/v1/completions",
            payer.plaintext(),
            "{\"model\":\"demo-byte-lm\",\"prompt\":\"m\",\"max_tokens\":2}");
    assertThat(payerReply.status()).isEqualTo(200);
    // a charge is counted when durable, which the answer waited for; scrape until all four are in
    await()
        .atMost(Duration.ofSeconds(60))
        .untilAsserted(
            () -> {
              Map<String, Double> series = new HashMap<>();
              String text = client.get("/metrics", null).raw().body();
              for (String line : text.split("\n")) {
                Matcher m = SERIES.matcher(line);
                if (m.matches()) {
                  series.put(m.group(1), Double.parseDouble(m.group(2)));
                }
              }
              // opt-in, at most one promoted account (metrics.spend_top_accounts=1), the rest
              assertThat(series.keySet()).contains("optin", "other");
              assertThat(series.keySet()).hasSizeLessThanOrEqualTo(3);
              assertThat(series.keySet()).isSubsetOf("optin", "other", "payer", "small1", "small2");
              long total = 0;
              for (String account : List.of("payer", "optin", "small1", "small2")) {
                total += storedDeviceNs(account);
              }
              double sum = series.values().stream().mapToDouble(Double::doubleValue).sum();
              assertThat((long) sum).isEqualTo(total);
              assertThat(text).contains("gpumeter_account_spend_micros_total{account=\"");
            });
  }

  /** One sample of {@code /metrics} (0 when absent), e.g. {@code name{currency="USD"}}. */
  private static double metric(String text, String series) {
    for (String line : text.split("\n")) {
      if (line.startsWith(series + " ")) {
        return Double.parseDouble(line.substring(series.length() + 1).strip());
      }
    }
    return 0;
  }

  /**
   * The budget's reservation and settlement counters in money (issue 11): per currency, the
   * device-ns amounts priced at the reservation's price, rounded once; the settled amount is the
   * stored charges' device time at that price.
   */
  @Test
  void budgetCountersAreAlsoInMoneyPerCurrency() throws Exception {
    String reservedNs = "gpumeter_budget_reserved_device_nanoseconds_total";
    String settledNs = "gpumeter_budget_settled_device_nanoseconds_total";
    String reservedMicros = "gpumeter_budget_reserved_micros_total{currency=\"USD\"}";
    String settledMicros = "gpumeter_budget_settled_micros_total{currency=\"USD\"}";
    String settlements = "gpumeter_budget_settlements_total";
    String before = client.get("/metrics", null).raw().body();
    long stored = 0;
    for (int i = 0; i < 3; i++) {
      Reply r =
          client.post(
              "/v1/completions",
              payer.plaintext(),
              "{\"model\":\"demo-byte-lm\",\"prompt\":\"budget " + i + "\",\"max_tokens\":3}");
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
      stored += stored(r.json().get("id").asText()).deviceNs();
    }
    long charged = stored;
    // a reservation settles once its charge is durable, next to the answer: wait for all three
    await()
        .atMost(Duration.ofSeconds(60))
        .until(
            () ->
                metric(client.get("/metrics", null).raw().body(), settlements)
                    >= metric(before, settlements) + 3);
    String after = client.get("/metrics", null).raw().body();
    long dSettledNs = (long) (metric(after, settledNs) - metric(before, settledNs));
    long dReservedNs = (long) (metric(after, reservedNs) - metric(before, reservedNs));
    long dSettledMicros = (long) (metric(after, settledMicros) - metric(before, settledMicros));
    long dReservedMicros = (long) (metric(after, reservedMicros) - metric(before, reservedMicros));
    assertThat(dSettledNs).isEqualTo(charged);
    // every reservation of this window is at PRICE micro-units per second: ns x PRICE / 10^9
    // micro-units, each counter rounded once, so a difference of two is within one micro-unit
    assertThat((double) dSettledMicros)
        .isCloseTo(charged * (double) PRICE / 1e9, org.assertj.core.data.Offset.offset(1.0));
    assertThat(dReservedMicros).isPositive();
    assertThat((double) dReservedMicros)
        .isCloseTo(dReservedNs * (double) PRICE / 1e9, org.assertj.core.data.Offset.offset(1.0));
  }

  private static long storedDeviceNs(String account) throws Exception {
    try (var c = db.maintenanceDataSource().getConnection();
        var ps =
            c.prepareStatement(
                "SELECT coalesce(sum(r.device_ns), 0) FROM usage_records r JOIN accounts a"
                    + " ON a.id = r.account_id WHERE a.name = ?")) {
      ps.setString(1, account);
      try (var rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }
}
