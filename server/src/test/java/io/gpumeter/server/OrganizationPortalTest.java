package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.Invoice;
import io.gpumeter.billing.KeyScope;
import io.gpumeter.billing.VoidReason;
import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.net.URLEncoder;
import java.net.http.HttpRequest;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.time.YearMonth;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The customer read endpoints against a real server and its embedded PostgreSQL: the request log
 * ({@code /v1/organization/requests}: shape, cost from the stored charge, voids, scopes, paging),
 * the balance and the invoices (scopes, isolation between keys and accounts, bad parameters). Raw
 * HTTP: the official OpenAI client has none of these endpoints.
 */
@Timeout(value = 15, unit = TimeUnit.MINUTES)
class OrganizationPortalTest {
  private static final TimerInfo CPU = new TimerInfo("test", "cpu", "cpu", "", "", "");

  /** A device class no price covers: its records are stored unpriced. */
  private static final TimerInfo UNPRICED_GPU =
      new TimerInfo("test", "cuda:0", "Portal Test GPU", "GPU-0", "1", "1");

  private static final long TWO_SECONDS = 2_000_000_000L;
  private static final long PRICE_MICROS_PER_S = 1_500;
  private static final long COST_MICROS = 3_000; // 2 s at 1500 micro-units per second
  private static final long INCLUDED_NS = 3_000_000_000L;
  private static final long GRANT_MICROS = 100_000;

  private static GpumeterServer server;
  private static Client client;
  private static Accounting accounting;

  private static CreatedApiKey a1; // acme, inference
  private static CreatedApiKey a2; // acme, inference
  private static CreatedApiKey admin; // acme, account_admin
  private static CreatedApiKey gAdmin; // globex, account_admin
  private static CreatedApiKey gKey; // globex, inference

  /** The acme request log as the admin key must see it, newest first. */
  private static final List<String> ACME =
      List.of("p-06", "p-05", "p-04b", "p-04a", "p-03", "p-02", "p-01");

  @BeforeAll
  static void start() throws Exception {
    server = GpumeterServer.start(TestServers.config("portal").build(), StepListener.NONE);
    client = new Client(server.port());
    accounting = server.billing().accounting();
    var keys = server.billing().apiKeys();
    a1 = keys.create("acme");
    a2 = keys.create("acme");
    admin = keys.create("acme", KeyScope.ACCOUNT_ADMIN);
    gAdmin = keys.create("globex", KeyScope.ACCOUNT_ADMIN);
    gKey = keys.create("globex");

    Instant now = Instant.now();
    Instant monthStart =
        YearMonth.from(now.atZone(ZoneOffset.UTC))
            .atDay(1)
            .atStartOfDay()
            .toInstant(ZoneOffset.UTC);
    accounting.setPrice(
        "*", "cpu", "USD", PRICE_MICROS_PER_S, monthStart.minus(Duration.ofDays(40)), null);
    accounting.createPlan("portal-basic", INCLUDED_NS);
    accounting.assignPlan("acme", "portal-basic", monthStart.minus(Duration.ofDays(1)));
    accounting.grantCredit("acme", "topup", GRANT_MICROS, null, "prepaid");

    // Every record in this UTC month, so the month's allowance and invoice hold them all.
    Instant t = now.minusSeconds(30).isBefore(monthStart) ? monthStart : now.minusSeconds(30);
    // Published one at a time so the allowance is used in this order: p-01 takes 2 s, p-02 1 s.
    publish("p-01", a1, "m1", CPU, t, UsageStatus.OK);
    publish("p-02", a2, "m1", CPU, t.plusMillis(10), UsageStatus.TIMEOUT);
    publish("g-01", gKey, "m1", CPU, t.plusMillis(15), UsageStatus.OK);
    publish("p-03", admin, "m1", CPU, t.plusMillis(20), UsageStatus.CANCELLED);
    // two requests that finished at the same instant: the request id orders them
    publish("p-04a", a1, "m1", CPU, t.plusMillis(30), UsageStatus.OK);
    publish("p-04b", a1, "m2", CPU, t.plusMillis(30), UsageStatus.FAILED);
    publish("p-05", a2, "m1", UNPRICED_GPU, t.plusMillis(40), UsageStatus.OK);
    publish("p-06", a1, "m1", CPU, t.plusMillis(50), UsageStatus.OK);
    server.billing().voidCharge("p-06", VoidReason.CLIENT_GONE).get(60, TimeUnit.SECONDS);
  }

  private static void publish(
      String id, CreatedApiKey key, String model, TimerInfo timer, Instant at, UsageStatus status)
      throws Exception {
    server
        .billing()
        .ledger()
        .publish(
            new UsageRecord(
                id,
                key.keyId(),
                key.accountId(),
                model,
                timer,
                "test",
                TWO_SECONDS,
                1_500_000_000L,
                500_000_000L,
                7,
                3,
                0,
                4,
                status,
                at.minusMillis(5_000),
                at,
                "session-" + id,
                0,
                0))
        .get(60, TimeUnit.SECONDS);
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  private static Reply get(String path, CreatedApiKey key) throws Exception {
    return client.get(path, key == null ? null : key.plaintext());
  }

  private static List<String> ids(Reply r) {
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    List<String> out = new ArrayList<>();
    for (JsonNode n : r.json().get("data")) {
      out.add(n.get("request_id").asText());
    }
    return out;
  }

  private static JsonNode request(Reply r, String id) {
    for (JsonNode n : r.json().get("data")) {
      if (n.get("request_id").asText().equals(id)) {
        return n;
      }
    }
    throw new AssertionError(id + " not in " + r);
  }

  private static void assertBadRequest(Reply r, String param) {
    assertThat(r.status()).as(r.toString()).isEqualTo(400);
    assertThat(r.json().at("/error/type").asText()).isEqualTo("invalid_request_error");
    assertThat(r.json().at("/error/param").asText()).isEqualTo(param);
    assertThat(r.json().at("/error/message").asText()).isNotBlank();
  }

  private static String enc(String s) {
    return URLEncoder.encode(s, StandardCharsets.UTF_8);
  }

  // ---- the request log

  /**
   * {@code batch_company} (issue 11): two requests generated at the same time each count the other
   * in every step they shared, so their sums are equal and positive, each is its stored record's
   * exact integer, and {@code batch_company} is that sum over the request's steps; a request alone
   * afterwards had no company.
   */
  @Test
  void twoConcurrentRequestsEachCountTheOtherInTheStepsTheyShared() throws Exception {
    CreatedApiKey key = server.billing().apiKeys().create("batchco");
    accounting.grantCredit("batchco", "topup", 1_000_000_000L, null, "batch company");
    String body = "{\"model\":\"demo-byte-lm\",\"prompt\":\"Two at once\",\"max_tokens\":24}";
    var first = client.postAsync("/v1/completions", key.plaintext(), body);
    var second = client.postAsync("/v1/completions", key.plaintext(), body);
    List<String> ids = new ArrayList<>();
    for (var f : List.of(first, second)) {
      Reply r = f.get(5, TimeUnit.MINUTES);
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
      ids.add(r.json().get("id").asText());
    }
    Reply alone = client.post("/v1/completions", key.plaintext(), body);
    assertThat(alone.status()).as(alone.toString()).isEqualTo(200);

    Reply log = get(RequestsEndpoint.PATH, key);
    assertThat(ids(log)).hasSize(3);
    List<Long> sums = new ArrayList<>();
    for (String id : ids) {
      JsonNode row = request(log, id);
      long sum = row.get("batch_company_sum").asLong();
      int steps = row.get("steps").asInt();
      assertThat(sum)
          .as(row.toString())
          .isEqualTo(server.billing().usage().find(id).orElseThrow().record().batchCompanySum())
          .isBetween(1L, (long) steps);
      assertThat(row.get("batch_company").decimalValue())
          .isEqualByComparingTo(
              java.math.BigDecimal.valueOf(sum)
                  .divide(
                      java.math.BigDecimal.valueOf(steps), 3, java.math.RoundingMode.HALF_EVEN));
      sums.add(sum);
      // KV memory-time (issue 18): the stored record's, and positive for a request that ran
      var stored = server.billing().usage().find(id).orElseThrow().record();
      assertThat(row.get("kv_byte_ns").asLong())
          .as(row.toString())
          .isEqualTo(stored.kvByteNs())
          .isPositive();
      assertThat(row.get("peak_kv_bytes").asLong()).isEqualTo(stored.peakKvBytes()).isPositive();
    }
    assertThat(sums.get(0)).as("each counts the other once per shared step").isEqualTo(sums.get(1));
    JsonNode lone = request(log, alone.json().get("id").asText());
    assertThat(lone.get("batch_company_sum").asLong()).isZero();
    assertThat(lone.get("batch_company").decimalValue()).isEqualByComparingTo("0");

    // the same page as CSV: a header row with the JSON names, the same figures
    Reply csv = get(RequestsEndpoint.PATH + "?format=csv", key);
    assertThat(csv.status()).as(csv.toString()).isEqualTo(200);
    assertThat(csv.header("content-type")).startsWith("text/csv");
    assertThat(csv.header("x-gpumeter-has-more")).isEqualTo("false");
    String[] lines = csv.raw().body().split("\r\n");
    assertThat(lines[0]).isEqualTo(RequestLogCsv.HEADER);
    assertThat(lines).hasSize(4);
    List<String> header = List.of(lines[0].split(","));
    for (int i = 1; i < lines.length; i++) {
      String[] cells = lines[i].split(",", -1);
      assertThat(cells).hasSize(header.size());
      JsonNode row = request(log, cells[header.indexOf("request_id")]);
      assertThat(cells[header.indexOf("batch_company_sum")])
          .isEqualTo(row.get("batch_company_sum").asText());
      assertThat(new java.math.BigDecimal(cells[header.indexOf("batch_company")]))
          .isEqualByComparingTo(row.get("batch_company").decimalValue());
      assertThat(cells[header.indexOf("cost_micros")]).isEqualTo(row.get("cost_micros").asText());
      assertThat(cells[header.indexOf("kv_byte_ns")]).isEqualTo(row.get("kv_byte_ns").asText());
      assertThat(cells[header.indexOf("peak_kv_bytes")])
          .isEqualTo(row.get("peak_kv_bytes").asText());
    }
    assertThat(lines[lines.length - 1]).startsWith(csv.header("x-gpumeter-last-id") + ",");
    Reply badFormat = get(RequestsEndpoint.PATH + "?format=xml", key);
    assertThat(badFormat.status()).isEqualTo(400);
    assertThat(badFormat.json().at("/error/param").asText()).isEqualTo("format");
  }

  @Test
  void theRequestLogListsTheCallersChargesNewestFirstWithTheirStoredCost() throws Exception {
    Reply r = get(RequestsEndpoint.PATH, admin);
    assertThat(ids(r)).isEqualTo(ACME);
    assertThat(r.json().get("object").asText()).isEqualTo("list");
    assertThat(r.json().get("has_more").asBoolean()).isFalse();
    assertThat(r.json().get("first_id").asText()).isEqualTo("p-06");
    assertThat(r.json().get("last_id").asText()).isEqualTo("p-01");

    JsonNode p01 = request(r, "p-01");
    assertThat(p01.get("object").asText()).isEqualTo("request");
    assertThat(p01.get("model").asText()).isEqualTo("m1");
    assertThat(p01.get("api_key_id").asLong()).isEqualTo(a1.keyId());
    assertThat(p01.get("session_id").asText()).isEqualTo("session-p-01");
    assertThat(p01.get("status").asText()).isEqualTo("finished");
    assertThat(p01.get("prompt_tokens").asInt()).isEqualTo(7);
    assertThat(p01.get("completion_tokens").asInt()).isEqualTo(3);
    assertThat(p01.get("device_time_ns").asLong()).isEqualTo(TWO_SECONDS);
    assertThat(p01.get("prefill_time_ns").asLong()).isEqualTo(1_500_000_000L);
    assertThat(p01.get("decode_time_ns").asLong()).isEqualTo(500_000_000L);
    assertThat(p01.get("steps").asInt()).isEqualTo(4);
    assertThat(p01.get("finished_at").asLong() - p01.get("created_at").asLong()).isBetween(4L, 6L);
    // a record made outside the scheduler has no batch measure: nothing is made up
    assertThat(p01.get("batch_company").isNull()).isTrue();
    assertThat(p01.get("batch_company_sum").isNull()).isTrue();
    // the cost is the stored charge's, by the one rounding rule, as an integer
    assertThat(p01.get("cost_micros").isIntegralNumber()).isTrue();
    assertThat(p01.get("cost_micros").asLong()).isEqualTo(COST_MICROS);
    assertThat(p01.get("cost_micros").asLong())
        .isEqualTo(accounting.chargeCost("p-01").orElseThrow().roundedMicros());
    assertThat(p01.get("cost").asText()).isEqualTo("0.003000");
    assertThat(p01.get("cost_exact_nano_micros").asText()).isEqualTo("3000000000000");
    assertThat(p01.get("price_version").asLong())
        .isEqualTo(accounting.chargeCost("p-01").orElseThrow().priceVersionId());
    assertThat(p01.get("currency").asText()).isEqualTo("usd");
    assertThat(p01.get("voided").asBoolean()).isFalse();
    assertThat(p01.get("void_reason").isNull()).isTrue();

    assertThat(request(r, "p-02").get("status").asText()).isEqualTo("timed_out");
    assertThat(request(r, "p-03").get("status").asText()).isEqualTo("cancelled");
    assertThat(request(r, "p-04b").get("status").asText()).isEqualTo("failed");
    assertThat(request(r, "p-04b").get("model").asText()).isEqualTo("m2");
    // no price covers the GPU's device class: stored unpriced, and said so
    JsonNode p05 = request(r, "p-05");
    assertThat(p05.get("cost_micros").isNull()).isTrue();
    assertThat(p05.get("price_version").isNull()).isTrue();
    assertThat(p05.get("currency").asText()).isEqualTo("usd");
    // a voided charge is listed, with its reason
    JsonNode p06 = request(r, "p-06");
    assertThat(p06.get("voided").asBoolean()).isTrue();
    assertThat(p06.get("void_reason").asText()).isEqualTo("client_gone");
  }

  @Test
  void anInferenceKeySeesOnlyItselfAndNoKeySeesAnotherAccount() throws Exception {
    assertThat(ids(get(RequestsEndpoint.PATH, a1)))
        .containsExactly("p-06", "p-04b", "p-04a", "p-01");
    assertThat(ids(get(RequestsEndpoint.PATH, a2))).containsExactly("p-05", "p-02");
    assertThat(ids(get(RequestsEndpoint.PATH, gKey))).containsExactly("g-01");
    assertThat(ids(get(RequestsEndpoint.PATH, gAdmin))).containsExactly("g-01");
    assertThat(get(RequestsEndpoint.PATH, null).status()).isEqualTo(401);
  }

  @Test
  void pagesOfEverySizeNeitherRepeatNorSkip() throws Exception {
    for (int limit = 1; limit <= ACME.size() + 1; limit++) {
      List<String> seen = new ArrayList<>();
      String path = RequestsEndpoint.PATH + "?limit=" + limit;
      int pages = 0;
      while (true) {
        Reply r = get(path, admin);
        List<String> page = ids(r);
        assertThat(page.size()).isLessThanOrEqualTo(limit);
        seen.addAll(page);
        pages++;
        assertThat(pages).as("pages at limit %d", limit).isLessThanOrEqualTo(ACME.size() + 1);
        if (!r.json().get("has_more").asBoolean()) {
          break;
        }
        assertThat(page).hasSize(limit);
        path =
            RequestsEndpoint.PATH
                + "?limit="
                + limit
                + "&before="
                + enc(r.json().get("last_id").asText());
      }
      assertThat(seen).as("walk at limit %d", limit).isEqualTo(ACME);
    }
    // the page after the oldest is empty
    Reply last = get(RequestsEndpoint.PATH + "?before=p-01", admin);
    assertThat(ids(last)).isEmpty();
    assertThat(last.json().get("has_more").asBoolean()).isFalse();
    assertThat(last.json().get("last_id").isNull()).isTrue();
  }

  @Test
  void badRequestLogParametersAre400NamingTheParameter() throws Exception {
    String p = RequestsEndpoint.PATH;
    assertBadRequest(get(p + "?limit=0", admin), "limit");
    assertBadRequest(get(p + "?limit=" + (RequestsEndpoint.MAX_LIMIT + 1), admin), "limit");
    assertBadRequest(get(p + "?limit=ten", admin), "limit");
    assertBadRequest(get(p + "?limit=-1", admin), "limit");
    assertBadRequest(get(p + "?limit=", admin), "limit");
    assertBadRequest(get(p + "?before=", admin), "before");
    assertBadRequest(get(p + "?before=no-such-request", admin), "before");
    assertBadRequest(get(p + "?before=" + "x".repeat(300), admin), "before");
    // a cursor of another key or account is refused as an unknown one
    assertBadRequest(get(p + "?before=p-02", a1), "before");
    assertBadRequest(get(p + "?before=g-01", admin), "before");
    assertBadRequest(get(p + "?before=p-01", gAdmin), "before");
    assertBadRequest(get(p + "?after=p-01", admin), "after");
    assertThat(get(p + "?limit=" + RequestsEndpoint.MAX_LIMIT, admin).status()).isEqualTo(200);
    Reply post = client.post(p, admin.plaintext(), "{}");
    assertThat(post.status()).isEqualTo(405);
    assertThat(post.header("allow")).isEqualTo("GET");
  }

  // ---- the balance

  @Test
  void theBalanceShowsThePlanAllowanceAndTheCreditsFromAccounting() throws Exception {
    Reply r = get(BalanceEndpoint.PATH, admin);
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    JsonNode b = r.json();
    assertThat(b.get("object").asText()).isEqualTo("balance");
    assertThat(b.get("account").asText()).isEqualTo("acme");
    assertThat(b.get("currency").asText()).isEqualTo("usd");
    assertThat(b.get("postpaid_allowed").asBoolean()).isFalse();
    JsonNode plan = b.get("plan");
    assertThat(plan.get("name").asText()).isEqualTo("portal-basic");
    YearMonth month = YearMonth.now(ZoneOffset.UTC);
    long start = month.atDay(1).atStartOfDay().toEpochSecond(ZoneOffset.UTC);
    // a month boundary may pass between the request and here; both months are right then
    assertThat(plan.get("period_start").asLong())
        .isIn(start, month.minusMonths(1).atDay(1).atStartOfDay().toEpochSecond(ZoneOffset.UTC));
    assertThat(plan.get("period_end").asLong())
        .isEqualTo(
            YearMonth.from(
                    Instant.ofEpochSecond(plan.get("period_start").asLong()).atZone(ZoneOffset.UTC))
                .plusMonths(1)
                .atDay(1)
                .atStartOfDay()
                .toEpochSecond(ZoneOffset.UTC));
    JsonNode included = plan.get("included");
    assertThat(included).hasSize(1);
    assertThat(included.get(0).get("device_class").asText()).isEqualTo("*");
    assertThat(included.get(0).get("included_device_ns").asLong()).isEqualTo(INCLUDED_NS);
    // p-01 took 2 s of the 3 s, p-02 the last 1 s; the void of p-06 gave back none
    assertThat(included.get(0).get("used_device_ns").asLong()).isEqualTo(INCLUDED_NS);
    assertThat(included.get(0).get("remaining_device_ns").asLong()).isZero();
    assertThat(included.get(0).get("used_device_ns").asLong())
        .isEqualTo(accounting.balance("acme").allowanceUsedNs());

    // 1 s of p-02 and p-03, p-04a, p-04b whole came from the credit: 1500 + 3 x 3000
    long remaining = GRANT_MICROS - 1_500 - 3 * COST_MICROS;
    JsonNode credits = b.get("credits");
    assertThat(credits).hasSize(1);
    assertThat(credits.get(0).get("kind").asText()).isEqualTo("topup");
    assertThat(credits.get(0).get("granted_micros").asLong()).isEqualTo(GRANT_MICROS);
    assertThat(credits.get(0).get("remaining_micros").asLong()).isEqualTo(remaining);
    assertThat(credits.get(0).get("remaining_micros").isIntegralNumber()).isTrue();
    assertThat(credits.get(0).get("expires_at").isNull()).isTrue();
    assertThat(credits.get(0).get("expired").asBoolean()).isFalse();
    assertThat(b.get("credit_remaining_micros").asLong()).isEqualTo(remaining);
    assertThat(b.get("credit_remaining_micros").asLong())
        .isEqualTo(accounting.balance("acme").micros());
    assertThat(b.get("credit_remaining").asText()).isEqualTo(Accounting.decimal(remaining));

    // an account without a plan or credits
    Reply g = get(BalanceEndpoint.PATH, gAdmin);
    assertThat(g.status()).as(g.toString()).isEqualTo(200);
    assertThat(g.json().get("account").asText()).isEqualTo("globex");
    assertThat(g.json().get("plan").isNull()).isTrue();
    assertThat(g.json().get("credits")).isEmpty();
    assertThat(g.json().get("credit_remaining_micros").asLong()).isZero();
  }

  @Test
  void anExpiredGrantIsListedButNotCountedAsSpendable() throws Exception {
    Instant expiry = Instant.now().plusSeconds(3);
    CreatedApiKey key = server.billing().apiKeys().create("expiring", KeyScope.ACCOUNT_ADMIN);
    accounting.grantCredit("expiring", "grant", 7_000, expiry, "promo");
    Reply before = get(BalanceEndpoint.PATH, key);
    assertThat(before.status()).as(before.toString()).isEqualTo(200);
    JsonNode grant = before.json().get("credits").get(0);
    assertThat(grant.get("expires_at").asLong()).isEqualTo(expiry.getEpochSecond());
    // whichever side of the expiry the server read it on, the sum agrees with the flag
    assertThat(before.json().get("credit_remaining_micros").asLong())
        .isEqualTo(grant.get("expired").asBoolean() ? 0 : 7_000);
    await()
        .atMost(Duration.ofSeconds(60))
        .pollInterval(Duration.ofMillis(250))
        .untilAsserted(
            () -> {
              Reply after = get(BalanceEndpoint.PATH, key);
              assertThat(after.json().get("credits").get(0).get("expired").asBoolean()).isTrue();
              assertThat(after.json().get("credit_remaining_micros").asLong()).isZero();
            });
  }

  @Test
  void theBalanceAndInvoicesNeedAnAccountAdminKey() throws Exception {
    for (String path :
        List.of(
            BalanceEndpoint.PATH,
            InvoicesEndpoint.PATH,
            InvoicesEndpoint.PREFIX + InvoicesEndpoint.id(a1.accountId(), YearMonth.now()))) {
      Reply r = get(path, a1);
      assertThat(r.status()).as(path + " " + r).isEqualTo(403);
      assertThat(r.json().at("/error/code").asText()).isEqualTo("insufficient_scope");
      assertThat(get(path, null).status()).isEqualTo(401);
    }
    assertBadRequest(get(BalanceEndpoint.PATH + "?account=globex", admin), "account");
    assertThat(client.post(BalanceEndpoint.PATH, admin.plaintext(), "{}").status()).isEqualTo(405);
  }

  // ---- invoices

  @Test
  void invoicesAreTheCallersAccountsAsJsonCsvAndHtml() throws Exception {
    YearMonth month = YearMonth.now(ZoneOffset.UTC);
    Reply list = get(InvoicesEndpoint.PATH, admin);
    assertThat(list.status()).as(list.toString()).isEqualTo(200);
    assertThat(list.json().get("object").asText()).isEqualTo("list");
    JsonNode inv = list.json().get("data").get(0);
    String id = inv.get("id").asText();
    Invoice expected = accounting.invoice("acme", YearMonth.parse(inv.get("period").asText()));
    assertThat(id).isEqualTo("inv_" + admin.accountId() + "_" + expected.period());
    assertThat(expected.period()).isIn(month, month.minusMonths(1));
    assertThat(inv.get("object").asText()).isEqualTo("invoice");
    assertThat(inv.get("account").asText()).isEqualTo("acme");
    assertThat(inv.get("status").asText()).isEqualTo("draft");
    assertThat(inv.get("finalized_at").isNull()).isTrue();
    assertThat(inv.get("currency").asText()).isEqualTo("usd");
    assertThat(inv.get("total_micros").asLong()).isEqualTo(expected.totalMicros());
    assertThat(inv.get("line_count").asInt()).isEqualTo(expected.lines().size()).isPositive();

    Reply json = get(InvoicesEndpoint.PREFIX + id, admin);
    assertThat(json.status()).as(json.toString()).isEqualTo(200);
    assertThat(json.raw().body()).isEqualTo(Accounting.format(expected, "json"));
    assertThat(json.json().get("account").asText()).isEqualTo("acme");
    Reply csv = get(InvoicesEndpoint.PREFIX + id + "?format=csv", admin);
    assertThat(csv.status()).isEqualTo(200);
    assertThat(csv.header("content-type")).startsWith("text/csv");
    assertThat(csv.raw().body()).isEqualTo(Accounting.format(expected, "csv"));
    Reply html = get(InvoicesEndpoint.PREFIX + id + "?format=html", admin);
    assertThat(html.status()).isEqualTo(200);
    assertThat(html.header("content-type")).startsWith("text/html");
    assertThat(html.raw().body()).startsWith("<!DOCTYPE html>").contains("acme");

    // globex sees its own invoice only
    Reply g = get(InvoicesEndpoint.PATH, gAdmin);
    Set<String> gIds = new HashSet<>();
    for (JsonNode n : g.json().get("data")) {
      gIds.add(n.get("id").asText());
      assertThat(n.get("account").asText()).isEqualTo("globex");
    }
    assertThat(gIds).containsExactly("inv_" + gAdmin.accountId() + "_" + expected.period());
  }

  @Test
  void anotherAccountsInvoiceIsNotFoundAndBadFormatsAre400() throws Exception {
    YearMonth month = YearMonth.now(ZoneOffset.UTC);
    String acmeInvoice = InvoicesEndpoint.id(admin.accountId(), month);
    for (String id :
        List.of(
            acmeInvoice,
            InvoicesEndpoint.id(admin.accountId(), month.minusMonths(1)),
            "inv_999999_" + month,
            "not-an-id",
            "inv_" + gAdmin.accountId() + "_2026-13")) {
      Reply r = get(InvoicesEndpoint.PREFIX + enc(id), gAdmin);
      assertThat(r.status()).as(id + " " + r).isEqualTo(404);
      assertThat(r.json().at("/error/code").asText()).isEqualTo("invoice_not_found");
    }
    // a month of its own account without charges is as absent as another account's
    Reply empty =
        get(
            InvoicesEndpoint.PREFIX + InvoicesEndpoint.id(admin.accountId(), YearMonth.of(2001, 1)),
            admin);
    assertThat(empty.status()).isEqualTo(404);
    assertThat(empty.json().at("/error/code").asText()).isEqualTo("invoice_not_found");
    String own = InvoicesEndpoint.PREFIX + InvoicesEndpoint.id(gAdmin.accountId(), month);
    assertBadRequest(get(own + "?format=pdf", gAdmin), "format");
    assertBadRequest(get(own + "?format=", gAdmin), "format");
    assertBadRequest(get(own + "?fmt=csv", gAdmin), "fmt");
    assertBadRequest(get(InvoicesEndpoint.PATH + "?limit=5", gAdmin), "limit");
    HttpRequest delete =
        client
            .request(own, gAdmin.plaintext())
            .method("DELETE", HttpRequest.BodyPublishers.noBody())
            .build();
    assertThat(client.send(delete).status()).isEqualTo(405);
  }
}
