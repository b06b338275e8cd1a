package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.ChargeCost;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.math.BigDecimal;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Receipts stay exact across a price change (issue 11, DESIGN.md invariant 8): a new version set
 * through the operator API must start at least {@code pricing.min_lead} ahead (an earlier start is
 * a 400 naming {@code effective_from} that changes nothing), so the receipt price cache knows it
 * before it applies, and every request of a stream of them straddling the change has a receipt
 * equal to its stored charge, on both sides of it. Real server, model and PostgreSQL.
 */
@Timeout(value = 15, unit = TimeUnit.MINUTES)
class PriceChangeReceiptsTest {
  private static final String TOKEN = "price-change-admin-token-0123456789";
  private static final long LEAD_SECONDS = 5;
  private static final long OLD_PRICE = 2_000_003;
  private static final long NEW_PRICE = 7_000_019;

  private static GpumeterServer server;
  private static Client client;
  private static CreatedApiKey key;

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            TestServers.config("price-change")
                .set("admin.token", TOKEN)
                .set("pricing.min_lead", LEAD_SECONDS + "s")
                .build(),
            StepListener.NONE);
    client = new Client(server.port());
    key = server.billing().apiKeys().create("straddle");
    var accounting = server.billing().accounting();
    // the history before the test (the library call takes any start; the lead is the operator's)
    accounting.setPrice("*", "cpu", "USD", OLD_PRICE, Instant.now().minusSeconds(3_600), null);
    accounting.grantCredit("straddle", "topup", 100_000_000_000L, null, "price change test");
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  private static Reply admin(String method, String body) throws Exception {
    return method.equals("GET")
        ? client.get("/admin/v1/prices", TOKEN)
        : client.post("/admin/v1/prices", TOKEN, body);
  }

  @Test
  void everyReceiptAroundAPriceChangeEqualsItsStoredCharge() throws Exception {
    String before = admin("GET", null).raw().body();
    // a start inside the lead is refused, naming the field, and changes nothing
    Reply early =
        admin(
            "POST",
            "{\"model\":\"*\",\"device_class\":\"cpu\",\"micros_per_device_second\":"
                + NEW_PRICE
                + ",\"effective_from\":"
                + (Instant.now().getEpochSecond() + 1)
                + "}");
    assertThat(early.status()).as(early.toString()).isEqualTo(400);
    JsonNode error = early.json().get("error");
    assertThat(error.get("param").asText()).isEqualTo("effective_from");
    assertThat(error.get("message").asText()).contains("pricing.min_lead");
    assertThat(admin("GET", null).raw().body()).isEqualTo(before);

    // requests run continuously from before the change until after it
    List<CompletableFuture<Reply>> replies = new ArrayList<>();
    long asked = Instant.now().getEpochSecond();
    // no effective_from: it starts pricing.min_lead from now
    Reply set =
        admin(
            "POST",
            "{\"model\":\"*\",\"device_class\":\"cpu\",\"micros_per_device_second\":"
                + NEW_PRICE
                + "}");
    assertThat(set.status()).as(set.toString()).isEqualTo(201);
    long newVersion = set.json().get("id").asLong();
    long from = set.json().get("effective_from").asLong();
    assertThat(from).isGreaterThanOrEqualTo(asked + LEAD_SECONDS);
    Instant until = Instant.ofEpochSecond(from + 3);
    int i = 0;
    while (Instant.now().isBefore(until)) {
      // two at a time, so that steps are shared and finish times spread around the change
      List<CompletableFuture<Reply>> pair = new ArrayList<>();
      for (int j = 0; j < 2; j++) {
        pair.add(
            client.postAsync(
                "/v1/completions",
                key.plaintext(),
                "{\"model\":\"demo-byte-lm\",\"prompt\":\"straddle "
                    + i++
                    + "\",\"max_tokens\":2}"));
      }
      for (CompletableFuture<Reply> f : pair) {
        f.get(2, TimeUnit.MINUTES);
      }
      replies.addAll(pair);
    }
    Set<Long> versions = new HashSet<>();
    for (CompletableFuture<Reply> f : replies) {
      Reply r = f.get();
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
      String id = r.json().get("id").asText();
      JsonNode usage = r.json().get("usage");
      ChargeCost stored = server.billing().chargeCost(id).orElseThrow();
      assertThat(usage.get("price_version").asLong()).as(id).isEqualTo(stored.priceVersionId());
      assertThat(usage.get("cost").asLong()).as(id).isEqualTo(stored.roundedMicros());
      assertThat(Long.parseLong(r.header("x-gpumeter-cost-micros")))
          .as(id)
          .isEqualTo(stored.roundedMicros());
      assertThat(new BigDecimal(usage.get("cost_exact").asText()).movePointRight(15))
          .as(id)
          .isEqualByComparingTo(new BigDecimal(stored.exactNanoMicros()));
      versions.add(stored.priceVersionId());
    }
    // the stream straddled the change: charges on both sides of it
    assertThat(versions).as(replies.size() + " requests").hasSize(2).contains(newVersion);
  }
}
