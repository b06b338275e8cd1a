package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.models.admin.organization.usage.UsageCostsParams;
import com.openai.models.admin.organization.usage.UsageCostsResponse;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.VoidReason;
import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.billing.db.Database;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.math.BigInteger;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * {@code GET /v1/organization/costs} (issue 11) against a real server and its embedded PostgreSQL:
 * amounts from the stored per-charge cost (rolled up by V14 for 1h/1d, joined from the raw records
 * for 1m and sessions), UTC bucket boundaries, pages, scopes and isolation, voids (before and after
 * their record), CSV, and 400s naming the parameter.
 */
@Timeout(value = 15, unit = TimeUnit.MINUTES)
class CostsApiTest {
  private static final String PATH = "/v1/organization/costs";

  /** 1.500001 per device-second: costs with fractions of a micro-unit. */
  private static final long PRICE = 1_500_001;

  private static GpumeterServer server;
  private static OrganizationFixture fixture;
  private static Database db;
  private static Client client;
  private static CreatedApiKey a1; // acme, inference
  private static CreatedApiKey a2; // acme, inference
  private static CreatedApiKey admin; // acme, account_admin
  private static CreatedApiKey g1; // globex, account_admin

  /** Midnight UTC two days ago: recent enough for the raw records' retention. */
  private static Instant day;

  @BeforeAll
  static void start() throws Exception {
    server = GpumeterServer.start(TestServers.config("costs-api").build(), StepListener.NONE);
    db = Database.start(server.config().toolDatabaseConfig());
    client = new Client(server.port());
    fixture = new OrganizationFixture(server);
    a1 = fixture.a1;
    a2 = fixture.a2;
    admin = fixture.admin;
    g1 = fixture.g1;
    day = fixture.day;
    server
        .billing()
        .accounting()
        .setPrice("*", "cpu", "USD", PRICE, day.minus(Duration.ofDays(3)), null);
    // r6's void arrives before its record (the V6 row trigger applies it at insert)
    server.billing().voidCharge("r6", VoidReason.CLIENT_GONE).get(60, TimeUnit.SECONDS);
    List<CompletableFuture<Void>> fs = new ArrayList<>();
    fs.add(publish("r1", a1, "m1", day.minusMillis(1), 1_000_333, "s1"));
    fs.add(publish("r2", a1, "m1", day, 2_000_777, "s1"));
    fs.add(publish("r3", a2, "m2", day.plusSeconds(3_630), 3_000_001, "s2"));
    fs.add(publish("r4", admin, "m1", day.plusSeconds(3_659), 4_000_999, "s2"));
    fs.add(publish("g1", g1, "m1", day.plusSeconds(10), 50_000_000, "s1"));
    fs.add(publish("r5", a1, "m1", day.plusSeconds(7_200), 70_000_000, "s1"));
    fs.add(publish("r6", a1, "m1", day.plusSeconds(7_300), 80_000_000, "s1"));
    CompletableFuture.allOf(fs.toArray(CompletableFuture[]::new)).get(60, TimeUnit.SECONDS);
    // r5's void arrives after its record was priced and rolled up
    server.billing().voidCharge("r5", VoidReason.CLIENT_GONE).get(60, TimeUnit.SECONDS);
  }

  private static CompletableFuture<Void> publish(
      String id, CreatedApiKey key, String model, Instant at, long deviceNs, String session) {
    return fixture.publish(id, key, model, at, deviceNs - 1, 1, 3, 4, session);
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

  private static Reply costs(CreatedApiKey key, String query) throws Exception {
    return client.get(PATH + "?" + query, key.plaintext());
  }

  private static String range(Instant from, Instant to) {
    return OrganizationFixture.range(from, to);
  }

  /** The one rounding of the exact cost of these device times at {@link #PRICE}. */
  private static long micros(long... deviceNs) {
    BigInteger sum = BigInteger.ZERO;
    for (long ns : deviceNs) {
      sum = sum.add(BigInteger.valueOf(ns).multiply(BigInteger.valueOf(PRICE)));
    }
    return Accounting.roundToMicros(sum);
  }

  private static void assertAmount(JsonNode result, long micros) {
    assertThat(result.get("object").asText()).isEqualTo("organization.costs.result");
    JsonNode amount = result.get("amount");
    assertThat(amount.get("value_micros").isIntegralNumber()).isTrue();
    assertThat(amount.get("value_micros").asLong()).isEqualTo(micros);
    assertThat(amount.get("value").isTextual()).isTrue();
    assertThat(amount.get("value").asText()).isEqualTo(Accounting.decimal(micros));
    assertThat(amount.get("currency").asText()).isEqualTo("usd");
  }

  @Test
  void dailyBucketsSplitAtUtcMidnightAndAKeySeesOnlyItself() throws Exception {
    Reply r =
        costs(
            a1,
            range(day.minus(Duration.ofDays(1)), day.plus(Duration.ofDays(1)))
                + "&bucket_width=1d");
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    JsonNode page = r.json();
    assertThat(page.get("object").asText()).isEqualTo("page");
    assertThat(page.get("has_more").asBoolean()).isFalse();
    assertThat(page.get("next_page").isNull()).isTrue();
    JsonNode data = page.get("data");
    assertThat(data).hasSize(2);
    assertThat(data.get(0).get("object").asText()).isEqualTo("bucket");
    assertThat(data.get(0).get("start_time").asLong())
        .isEqualTo(day.minus(Duration.ofDays(1)).getEpochSecond());
    assertThat(data.get(0).get("end_time").asLong()).isEqualTo(day.getEpochSecond());
    // 23:59:59.999 belongs to the day before, 00:00:00 to the day; r5 and r6 are voided
    assertThat(data.get(0).get("results")).hasSize(1);
    assertAmount(data.get(0).get("results").get(0), micros(1_000_333));
    assertThat(data.get(1).get("results")).hasSize(1);
    assertAmount(data.get(1).get("results").get(0), micros(2_000_777));
    assertThat(data.get(1).get("results").get(0).get("api_key_id").isNull()).isTrue();
  }

  @Test
  void anAccountAdminKeySeesItsWholeAccountAndNothingOfAnother() throws Exception {
    Reply r =
        costs(
            admin,
            range(day.minus(Duration.ofHours(1)), day.plus(Duration.ofHours(3)))
                + "&bucket_width=1h&group_by=api_key_id&group_by=model");
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    JsonNode data = r.json().get("data");
    assertThat(data).hasSize(4);
    assertAmount(data.get(0).get("results").get(0), micros(1_000_333));
    assertThat(data.get(0).get("results").get(0).get("api_key_id").asText())
        .isEqualTo(Long.toString(a1.keyId()));
    assertThat(data.get(1).get("results")).hasSize(1); // r2; globex's g1 is not there
    assertAmount(data.get(1).get("results").get(0), micros(2_000_777));
    JsonNode hour2 = data.get(2).get("results");
    assertThat(hour2).hasSize(2);
    for (JsonNode x : hour2) {
      if (x.get("model").asText().equals("m2")) {
        assertThat(x.get("api_key_id").asText()).isEqualTo(Long.toString(a2.keyId()));
        assertAmount(x, micros(3_000_001));
      } else {
        assertThat(x.get("api_key_id").asText()).isEqualTo(Long.toString(admin.keyId()));
        assertAmount(x, micros(4_000_999));
      }
    }
    assertThat(data.get(3).get("results")).isEmpty(); // r5 and r6 are voided

    Reply other = costs(g1, range(day.minus(Duration.ofDays(1)), day.plus(Duration.ofDays(1))));
    List<Long> amounts = new ArrayList<>();
    other
        .json()
        .get("data")
        .forEach(
            b -> b.get("results").forEach(x -> amounts.add(x.at("/amount/value_micros").asLong())));
    assertThat(amounts).containsExactly(micros(50_000_000));
    Reply cross =
        costs(
            g1,
            range(day.minus(Duration.ofDays(1)), day.plus(Duration.ofDays(1)))
                + "&api_key_ids="
                + a1.keyId());
    assertThat(cross.status()).isEqualTo(200);
    cross.json().get("data").forEach(b -> assertThat(b.get("results")).isEmpty());

    Reply forbidden =
        costs(a1, range(day, day.plus(Duration.ofDays(1))) + "&api_key_ids=" + a2.keyId());
    assertThat(forbidden.status()).isEqualTo(403);
    assertThat(forbidden.json().at("/error/param").asText()).isEqualTo("api_key_ids");
  }

  @Test
  void theTotalIsTheSumOfTheStoredChargeCostsFromTheRollupAndFromTheRawRecords() throws Exception {
    BigInteger stored = BigInteger.ZERO;
    int charges = 0;
    SettledCharges.settle(db.maintenanceDataSource());
    try (Connection c = db.maintenanceDataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT p.cost_nmicros FROM charge_prices p WHERE p.account_id = ?"
                    + " AND NOT EXISTS (SELECT 1 FROM charge_voids v"
                    + " WHERE v.request_id = p.request_id)")) {
      ps.setLong(1, admin.accountId());
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          stored = stored.add(rs.getBigDecimal(1).toBigIntegerExact());
          charges++;
        }
      }
    }
    assertThat(charges).isEqualTo(4); // r1..r4; r5 and r6 voided, g1 elsewhere
    long expected = Accounting.roundToMicros(stored);
    assertThat(expected).isEqualTo(micros(1_000_333, 2_000_777, 3_000_001, 4_000_999));
    String whole = range(day.minus(Duration.ofDays(1)), day.plus(Duration.ofDays(1)));
    // one result per bucket without grouping: the day before holds r1, the day r2..r4
    Reply daily = costs(admin, whole + "&bucket_width=1d");
    assertAmount(daily.json().at("/data/0/results/0"), micros(1_000_333));
    assertAmount(daily.json().at("/data/1/results/0"), micros(2_000_777, 3_000_001, 4_000_999));
    // from the raw records (grouped by session): the same charges
    Reply sessions = costs(admin, whole + "&bucket_width=1d&group_by=session_id");
    assertThat(sessions.status()).as(sessions.toString()).isEqualTo(200);
    JsonNode s = sessions.json().at("/data/1/results");
    assertThat(s).hasSize(2);
    assertThat(s.get(0).get("session_id").asText()).isEqualTo("s1");
    assertAmount(s.get(0), micros(2_000_777));
    assertThat(s.get(1).get("session_id").asText()).isEqualTo("s2");
    assertAmount(s.get(1), micros(3_000_001, 4_000_999));
    // the rollup V14 keeps equals the stored costs of the charges that are not voided
    SettledCharges.settle(db.maintenanceDataSource());
    try (Connection c = db.maintenanceDataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT sum(cost_nmicros), sum(requests) FROM cost_hourly WHERE account_id = ?")) {
      ps.setLong(1, admin.accountId());
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        assertThat(rs.getBigDecimal(1).toBigIntegerExact()).isEqualTo(stored);
        assertThat(rs.getLong(2)).isEqualTo(4);
      }
    }
  }

  @Test
  void minuteBucketsComeFromTheRawRecords() throws Exception {
    Reply minutes =
        costs(a1, range(day.minusSeconds(60), day.plusSeconds(60)) + "&bucket_width=1m");
    assertThat(minutes.status()).as(minutes.toString()).isEqualTo(200);
    JsonNode data = minutes.json().get("data");
    assertThat(data).hasSize(2);
    assertThat(data.get(0).get("start_time").asLong()).isEqualTo(day.getEpochSecond() - 60);
    assertAmount(data.get(0).get("results").get(0), micros(1_000_333));
    assertAmount(data.get(1).get("results").get(0), micros(2_000_777));
  }

  @Test
  void pagesNeitherRepeatNorSkipABucket() throws Exception {
    Instant from = day.minus(Duration.ofHours(5));
    Instant to = day.plus(Duration.ofHours(4)); // 9 hourly buckets
    List<Long> starts = new ArrayList<>();
    long total = 0;
    String page = null;
    int pages = 0;
    do {
      Reply r =
          costs(
              admin,
              range(from, to) + "&bucket_width=1h&limit=4" + (page == null ? "" : "&page=" + page));
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
      for (JsonNode b : r.json().get("data")) {
        starts.add(b.get("start_time").asLong());
        for (JsonNode x : b.get("results")) {
          total += x.at("/amount/value_micros").asLong();
        }
      }
      page = r.json().get("has_more").asBoolean() ? r.json().get("next_page").asText() : null;
      pages++;
    } while (page != null && pages < 10);
    assertThat(pages).isEqualTo(3);
    List<Long> expected = new ArrayList<>();
    for (long t = from.getEpochSecond(); t < to.getEpochSecond(); t += 3_600) {
      expected.add(t);
    }
    assertThat(starts).isEqualTo(expected);
    // one result per hour: r1, r2, then r3+r4 rounded together
    assertThat(total)
        .isEqualTo(micros(1_000_333) + micros(2_000_777) + micros(3_000_001, 4_000_999));
  }

  @Test
  void badParametersAre400NamingTheParameter() throws Exception {
    String ok = range(day, day.plus(Duration.ofDays(1)));
    Map<String, String> cases =
        Map.ofEntries(
            Map.entry("end_time=" + day.getEpochSecond(), "start_time"),
            Map.entry("start_time=abc", "start_time"),
            Map.entry(
                "start_time=" + day.getEpochSecond() + "&end_time=" + day.getEpochSecond(),
                "end_time"),
            Map.entry(ok + "&bucket_width=2h", "bucket_width"),
            Map.entry(ok + "&group_by=line_item", "group_by"),
            Map.entry(ok + "&limit=32", "limit"),
            Map.entry(ok + "&page=xyz", "page"),
            Map.entry(ok + "&api_key_ids=k1", "api_key_ids"),
            Map.entry(ok + "&format=xml", "format"),
            Map.entry(ok + "&project_ids=p1", "project_ids"),
            Map.entry("start_time=0&group_by=session_id", "start_time"));
    for (var c : cases.entrySet()) {
      Reply r = costs(admin, c.getKey());
      assertThat(r.status()).as(c.getKey() + " -> " + r).isEqualTo(400);
      assertThat(r.json().at("/error/param").asText()).as(c.getKey()).isEqualTo(c.getValue());
      assertThat(r.json().at("/error/type").asText()).isEqualTo("invalid_request_error");
    }
    assertThat(client.get(PATH + "?" + ok, null).status()).isEqualTo(401);
  }

  @Test
  void csvHasAHeaderRowAndOneRowPerResult() throws Exception {
    Reply r =
        client.get(
            PATH
                + "?"
                + range(day.minus(Duration.ofDays(1)), day.plus(Duration.ofDays(1)))
                + "&bucket_width=1d&group_by=model&format=csv",
            admin.plaintext());
    assertThat(r.status()).isEqualTo(200);
    assertThat(r.header("content-type")).startsWith("text/csv");
    String[] lines = r.raw().body().split("\n");
    assertThat(lines[0])
        .isEqualTo(
            "start_time,end_time,model,api_key_id,device,session_id,amount_value_micros,"
                + "amount_value,currency,num_model_requests");
    long d = day.getEpochSecond();
    long m1 = micros(2_000_777, 4_000_999);
    long m2 = micros(3_000_001);
    assertThat(List.of(lines).subList(1, lines.length))
        .containsExactly(
            (d - 86_400)
                + ","
                + d
                + ",m1,,,,"
                + micros(1_000_333)
                + ","
                + Accounting.decimal(micros(1_000_333))
                + ",usd,1",
            d + "," + (d + 86_400) + ",m1,,,," + m1 + "," + Accounting.decimal(m1) + ",usd,2",
            d + "," + (d + 86_400) + ",m2,,,," + m2 + "," + Accounting.decimal(m2) + ",usd,1");
  }

  @Test
  void theOfficialOpenAiClientReadsThePage() {
    OpenAIClient openai =
        OpenAIOkHttpClient.builder()
            .baseUrl("http://127.0.0.1:" + server.port() + "/v1")
            .apiKey(admin.plaintext())
            .adminApiKey(admin.plaintext())
            .maxRetries(0)
            .build();
    try {
      UsageCostsResponse page =
          openai
              .admin()
              .organization()
              .usage()
              .costs(
                  UsageCostsParams.builder()
                      .startTime(day.getEpochSecond())
                      .endTime(day.plus(Duration.ofDays(1)).getEpochSecond())
                      .bucketWidth(UsageCostsParams.BucketWidth._1D)
                      .addGroupBy(UsageCostsParams.GroupBy.API_KEY_ID)
                      .build());
      assertThat(page.data()).hasSize(1);
      assertThat(page.hasMore()).isFalse();
      assertThat(page.data().get(0).startTime()).isEqualTo(day.getEpochSecond());
      List<Long> micros = new ArrayList<>();
      for (var result : page.data().get(0).results()) {
        var costs = result.asOrganizationCosts();
        var amount = costs.amount().orElseThrow();
        assertThat(amount.currency()).contains("usd");
        micros.add(amount._additionalProperties().get("value_micros").convert(Long.class));
      }
      // r2 (a1), r3 (a2), r4 (admin): one result per key
      assertThat(micros)
          .containsExactlyInAnyOrder(micros(2_000_777), micros(3_000_001), micros(4_000_999));
    } finally {
      openai.close();
    }
  }
}
