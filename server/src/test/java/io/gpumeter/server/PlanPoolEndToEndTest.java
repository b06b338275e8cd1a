package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.fasterxml.jackson.databind.JsonNode;
import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.models.completions.Completion;
import com.openai.models.completions.CompletionCreateParams;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.time.Duration;
import java.time.Instant;
import java.time.YearMonth;
import java.time.ZoneOffset;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * A plan with a class-weighted pool and an overage price (V20) through a real server and its
 * embedded PostgreSQL: created over {@code /admin/v1/plans} (bad weights, an unknown class, a
 * negative overage price and an overage plan for a prepaid-only account are 400s that change
 * nothing), then real completions through the official OpenAI client on the CPU, charged from the
 * pool at the CPU's weight (3 pool-ns per device-ns), then from a credit and postpaid at the plan's
 * overage price; the invoice shows it to the micro-unit and {@code verify} agrees.
 */
class PlanPoolEndToEndTest {
  private static final String TOKEN = "admin-token-for-pool-tests-0123";
  private static final String V1 = "/admin/v1";
  private static final long POOL_NS = 3_000_000; // weighted device-ns per month
  private static final long CPU_WEIGHT_PPM = 3_000_000; // a CPU device-ns uses 3 pool-ns
  private static final long OVERAGE = 2_000_000; // micro-units per device-second
  private static final long BOOK = 1_000_000;

  private static GpumeterServer server;
  private static Client client;

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            TestServers.config("plan-pool").set("admin.token", TOKEN).build(), StepListener.NONE);
    client = new Client(server.port());
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  private static JsonNode ok(Reply r, int status) {
    assertThat(r.status()).as(r.toString()).isEqualTo(status);
    return r.json();
  }

  private static void refused(Reply r, String param) {
    assertThat(r.status()).as(r.toString()).isEqualTo(400);
    JsonNode e = r.json().get("error");
    assertThat(e.get("message").asText()).as(r.toString()).isNotBlank();
    assertThat(e.get("type").asText()).isEqualTo("invalid_request_error");
    if (param != null) {
      assertThat(r.toString()).contains(param);
    }
  }

  @Test
  void aWeightedPoolAndAnOveragePriceAreBilledExactlyThroughTheServer() throws Exception {
    long longAgo = Instant.now().minus(Duration.ofDays(70)).getEpochSecond();
    ok(
        client.post(
            V1 + "/prices",
            TOKEN,
            "{\"model\":\"*\",\"device_class\":\"cpu\",\"micros_per_device_second\":"
                + BOOK
                + ",\"effective_from\":"
                + longAgo
                + "}"),
        201);
    ok(client.post(V1 + "/accounts", TOKEN, "{\"name\":\"prepaid\",\"currency\":\"USD\"}"), 201);
    JsonNode account =
        ok(
            client.post(
                V1 + "/accounts",
                TOKEN,
                "{\"name\":\"pooled\",\"currency\":\"USD\",\"postpaid_allowed\":true}"),
            201);

    // bad plans: refused, nothing created
    String plansBefore = client.get(V1 + "/plans", TOKEN).raw().body();
    refused(
        client.post(
            V1 + "/plans",
            TOKEN,
            "{\"name\":\"p\",\"included_device_ns\":1,\"class_weights_ppm\":{\"cpu\":-1}}"),
        "weight");
    refused(
        client.post(
            V1 + "/plans",
            TOKEN,
            "{\"name\":\"p\",\"included_device_ns\":1,\"class_weights_ppm\":{\"nvidia-b300\":5}}"),
        "unknown device class");
    refused(
        client.post(
            V1 + "/plans",
            TOKEN,
            "{\"name\":\"p\",\"included_device_ns\":1,"
                + "\"overage_price_micros_per_device_second\":-1}"),
        "overage price");
    refused(
        client.post(
            V1 + "/plans",
            TOKEN,
            "{\"name\":\"p\",\"included_device_ns\":1,\"class_weights_ppm\":[1]}"),
        "class_weights_ppm");
    assertThat(client.get(V1 + "/plans", TOKEN).raw().body()).isEqualTo(plansBefore);

    JsonNode plan =
        ok(
            client.post(
                V1 + "/plans",
                TOKEN,
                "{\"name\":\"weighted\",\"included_device_ns\":"
                    + POOL_NS
                    + ",\"class_weights_ppm\":{\"cpu\":"
                    + CPU_WEIGHT_PPM
                    + "},\"overage_price_micros_per_device_second\":"
                    + OVERAGE
                    + "}"),
            201);
    assertThat(plan.get("class_weights_ppm").get("cpu").asLong()).isEqualTo(CPU_WEIGHT_PPM);
    assertThat(plan.get("overage_price_micros_per_device_second").asLong()).isEqualTo(OVERAGE);
    assertThat(plan.get("overage_price_per_device_second").asText()).isEqualTo("2.000000");

    // an overage price is billed postpaid: not for an account that does not allow it
    refused(
        client.post(
            V1 + "/accounts/prepaid/plan",
            TOKEN,
            "{\"plan\":\"weighted\",\"effective_from\":" + longAgo + "}"),
        "postpaid");
    assertThat(ok(client.get(V1 + "/accounts/prepaid/balance", TOKEN), 200).toString())
        .contains("\"allowance_included_device_ns\":0");

    ok(
        client.post(
            V1 + "/accounts/pooled/plan",
            TOKEN,
            "{\"plan\":\"weighted\",\"effective_from\":" + longAgo + "}"),
        200);
    ok(
        client.post(
            V1 + "/accounts/pooled/credits",
            TOKEN,
            "{\"kind\":\"grant\",\"amount_micros\":300,\"expires_at\":"
                + Instant.now().plus(Duration.ofDays(30)).getEpochSecond()
                + "}"),
        201);
    JsonNode key =
        ok(client.post(V1 + "/keys", TOKEN, "{\"account\":\"pooled\",\"label\":\"pool\"}"), 201);

    OpenAIClient openai =
        OpenAIOkHttpClient.builder()
            .apiKey(key.get("key").asText())
            .baseUrl("http://127.0.0.1:" + server.port() + "/v1")
            .maxRetries(0)
            .timeout(Duration.ofSeconds(120))
            .build();
    Map<String, Long> receiptCost = new TreeMap<>();
    for (int i = 0; i < 3; i++) {
      Completion c =
          openai
              .completions()
              .create(
                  CompletionCreateParams.builder()
                      .model("demo-byte-lm")
                      .prompt("Pool " + i)
                      .maxTokens(8)
                      .temperature(0)
                      .build());
      assertThat(c.choices()).hasSize(1);
      receiptCost.put(
          c.id(), c.usage().orElseThrow()._additionalProperties().get("cost").convert(Long.class));
    }
    String id =
        "inv_"
            + account.get("id").asLong()
            + "_"
            + YearMonth.from(Instant.now().atZone(ZoneOffset.UTC));
    await()
        .atMost(Duration.ofSeconds(60))
        .pollInterval(Duration.ofMillis(200))
        .until(
            () -> {
              Reply r = client.get(V1 + "/invoices/" + id, TOKEN);
              return r.status() == 200
                  && r.json().get("lines").get(0).get("requests").asLong() == 3;
            });

    JsonNode invoice = ok(client.get(V1 + "/invoices/" + id, TOKEN), 200);
    assertThat(invoice.get("lines")).hasSize(1);
    JsonNode line = invoice.get("lines").get(0);
    long deviceNs = line.get("device_ns").asLong();
    long included = line.get("included_ns").asLong();
    long billable = line.get("billable_ns").asLong();
    // the pool covers POOL_NS / 3 CPU device-ns exactly (it divides evenly), no more
    assertThat(included).as(line.toString()).isEqualTo(Math.min(deviceNs, POOL_NS / 3));
    assertThat(included + billable).isEqualTo(deviceNs);
    // what is beyond the pool is priced at the plan's overage price, not the price book
    assertThat(line.get("unit_price_micros_per_device_second").asLong()).isEqualTo(OVERAGE);
    long amount =
        Accounting.roundToMicros(
            BigInteger.valueOf(billable).multiply(BigInteger.valueOf(OVERAGE)));
    assertThat(line.get("amount_micros").asLong()).as(line.toString()).isEqualTo(amount);
    assertThat(line.get("credits_micros").asLong()).isBetween(0L, 300L);
    assertThat(invoice.get("total_micros").asLong())
        .isEqualTo(amount - line.get("credits_micros").asLong());

    JsonNode verify = ok(client.get(V1 + "/invoices/" + id + "/verify", TOKEN), 200);
    assertThat(verify.get("ok").asBoolean()).as(verify.toString()).isTrue();

    // the pool deduction in the pool's unit (weighted device-seconds), beside device-seconds
    BigInteger pool = new BigInteger(line.get("pool_used_ppm_ns").asText());
    BigInteger low = BigInteger.valueOf(included).multiply(BigInteger.valueOf(CPU_WEIGHT_PPM));
    assertThat(pool)
        .as(line.toString())
        .isBetween(low, low.add(BigInteger.valueOf(CPU_WEIGHT_PPM - 1)));
    assertThat(new BigDecimal(line.get("pool_used_weighted_device_seconds").asText()))
        .isEqualByComparingTo(new BigDecimal(pool, 15));
    assertThat(line.get("included_device_seconds").asText())
        .isEqualTo(BigDecimal.valueOf(included, 9).toPlainString());
    assertThat(client.get(V1 + "/invoices/" + id + "?format=csv", TOKEN).raw().body())
        .contains("pool_used_ppm_ns,pool_used_weighted_device_seconds")
        .contains(
            "," + included + "," + pool + "," + new BigDecimal(pool, 15).toPlainString() + ",");
    assertThat(client.get(V1 + "/invoices/" + id + "?format=html", TOKEN).raw().body())
        .contains("Pool used, weighted device-seconds")
        .contains(new BigDecimal(pool, 15).toPlainString());

    assertReceiptsAgreeWithTheInvoice(key.get("key").asText(), line, pool, receiptCost);

    JsonNode balance = ok(client.get(V1 + "/accounts/pooled/balance", TOKEN), 200);
    assertThat(balance.get("allowance_included_device_ns").asLong()).isEqualTo(POOL_NS);
    // used in weighted device-ns: 3 per CPU device-ns
    assertThat(balance.get("allowance_used_device_ns").asLong()).isEqualTo(included * 3);
  }

  /**
   * Each request's receipt: the answer's {@code usage.cost} is the list cost (price book) that the
   * request log shows as {@code cost_micros}; the log's {@code charged_*} fields say how it was
   * paid (allowance, then the overage price, credits, postpaid), and their exact sums are the
   * invoice line to the micro-unit; the CSV page has the same figures as the JSON page.
   */
  private static void assertReceiptsAgreeWithTheInvoice(
      String key, JsonNode line, BigInteger pool, Map<String, Long> receiptCost) throws Exception {
    JsonNode log = ok(client.get("/v1/organization/requests?limit=100", key), 200);
    JsonNode rows = log.get("data");
    assertThat(rows).hasSize(receiptCost.size());
    long included = 0;
    long billable = 0;
    BigInteger poolSum = BigInteger.ZERO;
    BigInteger amount = BigInteger.ZERO;
    BigInteger credits = BigInteger.ZERO;
    BigInteger postpaid = BigInteger.ZERO;
    for (JsonNode r : rows) {
      String rid = r.get("request_id").asText();
      assertThat(r.get("cost_micros").asLong()).as(r.toString()).isEqualTo(receiptCost.get(rid));
      assertThat(r.get("cost_exact_nano_micros").asText())
          .isEqualTo(
              BigInteger.valueOf(r.get("device_time_ns").asLong())
                  .multiply(BigInteger.valueOf(BOOK))
                  .toString());
      assertThat(r.get("charged_unit_price_micros_per_device_second").asLong())
          .as(r.toString())
          .isEqualTo(OVERAGE);
      long inc = r.get("charged_included_device_ns").asLong();
      long bill = r.get("charged_billable_device_ns").asLong();
      assertThat(inc + bill).isEqualTo(r.get("device_time_ns").asLong());
      BigInteger amt = new BigInteger(r.get("charged_amount_exact_nano_micros").asText());
      assertThat(amt).isEqualTo(BigInteger.valueOf(bill).multiply(BigInteger.valueOf(OVERAGE)));
      assertThat(r.get("charged_amount_micros").asLong()).isEqualTo(Accounting.roundToMicros(amt));
      BigInteger cr = new BigInteger(r.get("charged_credits_exact_nano_micros").asText());
      BigInteger pp = new BigInteger(r.get("charged_postpaid_exact_nano_micros").asText());
      assertThat(cr.add(pp)).as("paid by credits then postpaid, no overspend").isEqualTo(amt);
      assertThat(r.get("charged_due_micros").asLong())
          .isEqualTo(Accounting.roundToMicros(amt) - Accounting.roundToMicros(cr));
      included += inc;
      billable += bill;
      poolSum = poolSum.add(new BigInteger(r.get("charged_pool_used_ppm_ns").asText()));
      amount = amount.add(amt);
      credits = credits.add(cr);
      postpaid = postpaid.add(pp);
    }
    assertThat(included).isEqualTo(line.get("included_ns").asLong());
    assertThat(billable).isEqualTo(line.get("billable_ns").asLong());
    assertThat(poolSum).isEqualTo(pool);
    assertThat(Accounting.roundToMicros(amount)).isEqualTo(line.get("amount_micros").asLong());
    assertThat(Accounting.roundToMicros(credits)).isEqualTo(line.get("credits_micros").asLong());
    assertThat(Accounting.roundToMicros(amount) - Accounting.roundToMicros(credits))
        .isEqualTo(line.get("due_micros").asLong());

    String csv = client.get("/v1/organization/requests?limit=100&format=csv", key).raw().body();
    List<String> lines = csv.lines().toList();
    List<String> header = List.of(lines.get(0).split(",", -1));
    assertThat(lines).hasSize(rows.size() + 1);
    for (int i = 0; i < rows.size(); i++) {
      List<String> cells = List.of(lines.get(i + 1).split(",", -1));
      for (String name : ChargedColumns.NAMES) {
        assertThat(cells.get(header.indexOf(name)))
            .as(name)
            .isEqualTo(rows.get(i).get(name).asText());
      }
    }
  }
}
