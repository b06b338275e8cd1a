package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.models.admin.organization.usage.UsageCompletionsParams;
import com.openai.models.admin.organization.usage.UsageCompletionsResponse;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.KeyScope;
import io.gpumeter.billing.VoidReason;
import io.gpumeter.billing.db.Database;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.net.URLEncoder;
import java.net.http.HttpRequest;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.PreparedStatement;
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
 * Usage a customer can read (issue 11) against a real server: sessions on the charge, the receipt
 * header, key scopes and isolation, {@code /v1/organization/usage/completions} (buckets, UTC
 * boundaries, pages, groups, voids, bad parameters), CSV streamed in chunks, and the official
 * OpenAI client reading the page.
 */
@Timeout(value = 15, unit = TimeUnit.MINUTES)
class UsageApiTest {
  private static final String ADMIN_TOKEN = "admin-token-for-usage-tests-0123456789";
  private static final String PATH = "/v1/organization/usage/completions";

  private static GpumeterServer server;
  private static OrganizationFixture fixture;
  private static Database db;
  private static Client client;

  /** Completions go through this account; the synthetic records below are in others. */
  private static CreatedApiKey caller;

  private static CreatedApiKey a1; // acme, inference
  private static CreatedApiKey a2; // acme, inference
  private static CreatedApiKey admin; // acme, account_admin
  private static CreatedApiKey g1; // globex, account_admin

  /** Midnight UTC two days ago: recent enough for the raw records' retention. */
  private static Instant day;

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            TestServers.config("usage-api").set("admin.token", ADMIN_TOKEN).build(),
            StepListener.NONE);
    db = Database.start(server.config().toolDatabaseConfig());
    client = new Client(server.port());
    var keys = server.billing().apiKeys();
    caller = keys.create("sessions");
    fixture = new OrganizationFixture(server);
    a1 = fixture.a1;
    a2 = fixture.a2;
    admin = fixture.admin;
    g1 = fixture.g1;
    day = fixture.day;
    List<CompletableFuture<Void>> fs = new ArrayList<>();
    // the last millisecond of the day before, and the first instant of the day
    fs.add(publish("r1", a1, "m1", day.minusMillis(1), 100, 10, 5, 1, "s1"));
    fs.add(publish("r2", a1, "m1", day, 200, 20, 6, 2, "s1"));
    fs.add(publish("r3", a2, "m2", day.plusSeconds(3_630), 300, 30, 7, 3, "s2"));
    fs.add(publish("r4", admin, "m1", day.plusSeconds(3_659), 400, 40, 8, 4, "s2"));
    fs.add(publish("g1", g1, "m1", day.plusSeconds(10), 5_000, 500, 50, 5, "s1"));
    fs.add(publish("r5", a1, "m1", day.plusSeconds(7_200), 7_000, 700, 70, 7, "s1"));
    CompletableFuture.allOf(fs.toArray(CompletableFuture[]::new)).get(60, TimeUnit.SECONDS);
    server.billing().voidCharge("r5", VoidReason.CLIENT_GONE).get(60, TimeUnit.SECONDS);
  }

  private static CompletableFuture<Void> publish(
      String id,
      CreatedApiKey key,
      String model,
      Instant at,
      long prefill,
      long decode,
      int prompt,
      int completion,
      String session) {
    return fixture.publish(id, key, model, at, prefill, decode, prompt, completion, session);
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

  private static Reply complete(Map<String, String> headers, String extraBody) throws Exception {
    HttpRequest.Builder b =
        client
            .request("/v1/completions", caller.plaintext())
            .header("Content-Type", "application/json")
            .POST(
                HttpRequest.BodyPublishers.ofString(
                    "{\"model\":\"demo-byte-lm\",\"prompt\":\"Hi\",\"max_tokens\":2"
                        + extraBody
                        + "}"));
    headers.forEach(b::header);
    return client.send(b.build());
  }

  private static String storedSession(String requestId) {
    return server.billing().usage().find(requestId).orElseThrow().record().sessionId();
  }

  @Test
  void theSessionIsTheHeaderElseTheUserFieldElseTheRequestId() throws Exception {
    Reply header = complete(Map.of("X-Session-Id", "conv:42"), ",\"user\":\"ignored@x\"");
    Reply user = complete(Map.of(), ",\"user\":\"user-7@example.com\"");
    Reply none = complete(Map.of(), "");
    assertThat(List.of(header.status(), user.status(), none.status())).containsOnly(200);
    assertThat(storedSession(header.json().get("id").asText())).isEqualTo("conv:42");
    assertThat(storedSession(user.json().get("id").asText())).isEqualTo("user-7@example.com");
    String id = none.json().get("id").asText();
    assertThat(storedSession(id)).isEqualTo(id);
  }

  @Test
  void badSessionIdsAre400NamingTheHeaderOrFieldAndChargeNothing() throws Exception {
    long before = countRecords(caller.keyId());
    Reply tooLong = complete(Map.of("X-Session-Id", "s".repeat(129)), "");
    Reply badChar = complete(Map.of("X-Session-Id", "a b"), "");
    Reply badUser = complete(Map.of(), ",\"user\":\"x/y\"");
    assertThat(tooLong.status()).isEqualTo(400);
    assertThat(tooLong.json().at("/error/param").asText()).isEqualTo("X-Session-Id");
    assertThat(badChar.status()).isEqualTo(400);
    assertThat(badChar.json().at("/error/param").asText()).isEqualTo("X-Session-Id");
    assertThat(badUser.status()).isEqualTo(400);
    assertThat(badUser.json().at("/error/param").asText()).isEqualTo("user");
    assertThat(badUser.json().at("/error/type").asText()).isEqualTo("invalid_request_error");
    assertThat(countRecords(caller.keyId())).isEqualTo(before);
    Reply longest = complete(Map.of("X-Session-Id", "a".repeat(128)), "");
    assertThat(longest.status()).isEqualTo(200);
  }

  private static long countRecords(long keyId) throws Exception {
    try (Connection c = db.maintenanceDataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT count(*) FROM usage_records WHERE api_key_id = ?")) {
      ps.setLong(1, keyId);
      try (var rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }

  @Test
  void theReceiptHeaderEqualsTheStoredChargeForAHundredRequests() throws Exception {
    List<CompletableFuture<Reply>> replies = new ArrayList<>();
    for (int i = 0; i < 100; i++) {
      replies.add(
          client.postAsync(
              "/v1/completions",
              caller.plaintext(),
              "{\"model\":\"demo-byte-lm\",\"prompt\":\"Receipt " + i + "\",\"max_tokens\":3}"));
    }
    for (CompletableFuture<Reply> f : replies) {
      Reply r = f.get(5, TimeUnit.MINUTES);
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
      String id = r.json().get("id").asText();
      assertThat(r.header("x-request-id")).isEqualTo(id);
      long receipt = Long.parseLong(r.header("x-gpumeter-device-time-ns"));
      assertThat(receipt).isPositive();
      assertThat(receipt).isEqualTo(r.json().at("/usage/device_time_ns").asLong());
      assertThat(server.billing().usage().find(id).orElseThrow().record().deviceNs())
          .isEqualTo(receipt);
    }
  }

  private static Reply usage(CreatedApiKey key, String query) throws Exception {
    return client.get(PATH + "?" + query, key.plaintext());
  }

  private static String range(Instant from, Instant to) {
    return OrganizationFixture.range(from, to);
  }

  @Test
  void dailyBucketsSplitAtUtcMidnightAndAKeySeesOnlyItself() throws Exception {
    Reply r =
        usage(
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
    JsonNode before = data.get(0);
    assertThat(before.get("object").asText()).isEqualTo("bucket");
    assertThat(before.get("start_time").asLong())
        .isEqualTo(day.minus(Duration.ofDays(1)).getEpochSecond());
    assertThat(before.get("end_time").asLong()).isEqualTo(day.getEpochSecond());
    // 23:59:59.999 belongs to the day before; 00:00:00 to the day; r5 is voided
    assertThat(before.get("results")).hasSize(1);
    assertResult(before.get("results").get(0), 1, 5, 1, 110, 100, 10);
    assertThat(data.get(1).get("results")).hasSize(1);
    assertResult(data.get(1).get("results").get(0), 1, 6, 2, 220, 200, 20);
    assertThat(data.get(1).get("results").get(0).get("api_key_id").isNull()).isTrue();
  }

  private static void assertResult(
      JsonNode res,
      long requests,
      long input,
      long output,
      long deviceNs,
      long prefillNs,
      long decodeNs) {
    assertThat(res.get("object").asText()).isEqualTo("organization.usage.completions.result");
    assertThat(res.get("num_model_requests").asLong()).isEqualTo(requests);
    assertThat(res.get("input_tokens").asLong()).isEqualTo(input);
    assertThat(res.get("output_tokens").asLong()).isEqualTo(output);
    assertThat(res.get("device_time_ns").asLong()).isEqualTo(deviceNs);
    assertThat(res.get("prefill_time_ns").asLong()).isEqualTo(prefillNs);
    assertThat(res.get("decode_time_ns").asLong()).isEqualTo(decodeNs);
  }

  @Test
  void anAccountAdminKeySeesItsWholeAccountAndNothingOfAnother() throws Exception {
    Reply r =
        usage(
            admin,
            range(day.minus(Duration.ofHours(1)), day.plus(Duration.ofHours(3)))
                + "&bucket_width=1h&group_by=api_key_id&group_by=model");
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    JsonNode data = r.json().get("data");
    assertThat(data).hasSize(4);
    assertThat(data.get(0).get("results")).hasSize(1); // r1
    assertThat(data.get(0).get("results").get(0).get("api_key_id").asText())
        .isEqualTo(Long.toString(a1.keyId()));
    assertThat(data.get(1).get("results")).hasSize(1); // r2; globex's g1 is not there
    assertResult(data.get(1).get("results").get(0), 1, 6, 2, 220, 200, 20);
    JsonNode hour2 = data.get(2).get("results"); // r3 (a2, m2) and r4 (admin, m1)
    assertThat(hour2).hasSize(2);
    List<String> keys = new ArrayList<>();
    hour2.forEach(x -> keys.add(x.get("api_key_id").asText() + "/" + x.get("model").asText()));
    assertThat(keys).containsExactlyInAnyOrder(a2.keyId() + "/m2", admin.keyId() + "/m1");
    assertThat(data.get(3).get("results")).isEmpty(); // r5 is voided

    // the other account's admin sees only its own record
    Reply other = usage(g1, range(day.minus(Duration.ofDays(1)), day.plus(Duration.ofDays(1))));
    long requests = 0;
    for (JsonNode b : other.json().get("data")) {
      for (JsonNode x : b.get("results")) {
        requests += x.get("num_model_requests").asLong();
        assertThat(x.get("device_time_ns").asLong()).isEqualTo(5_500);
      }
    }
    assertThat(requests).isEqualTo(1);
    // naming acme's keys from globex matches nothing
    Reply cross =
        usage(
            g1,
            range(day.minus(Duration.ofDays(1)), day.plus(Duration.ofDays(1)))
                + "&api_key_ids="
                + a1.keyId());
    assertThat(cross.status()).isEqualTo(200);
    cross.json().get("data").forEach(b -> assertThat(b.get("results")).isEmpty());
  }

  @Test
  void anInferenceKeyAskingForAnotherKeyIsRefused() throws Exception {
    Reply r = usage(a1, range(day, day.plus(Duration.ofDays(1))) + "&api_key_ids=" + a2.keyId());
    assertThat(r.status()).isEqualTo(403);
    assertThat(r.json().at("/error/param").asText()).isEqualTo("api_key_ids");
    Reply own = usage(a1, range(day, day.plus(Duration.ofDays(1))) + "&api_key_ids=" + a1.keyId());
    assertThat(own.status()).isEqualTo(200);
  }

  @Test
  void sessionsAndMinutesComeFromTheRawRecordsAndAgreeWithTheRollup() throws Exception {
    Reply r =
        usage(
            admin,
            range(day, day.plus(Duration.ofDays(1))) + "&bucket_width=1d&group_by=session_id");
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    JsonNode results = r.json().get("data").get(0).get("results");
    assertThat(results).hasSize(2);
    assertThat(results.get(0).get("session_id").asText()).isEqualTo("s1");
    assertResult(results.get(0), 1, 6, 2, 220, 200, 20); // r5 voided
    assertThat(results.get(1).get("session_id").asText()).isEqualTo("s2");
    assertResult(results.get(1), 2, 15, 7, 770, 700, 70);

    Reply minutes =
        usage(a1, range(day.minusSeconds(60), day.plusSeconds(60)) + "&bucket_width=1m&limit=2");
    JsonNode data = minutes.json().get("data");
    assertThat(data).hasSize(2);
    assertThat(data.get(0).get("start_time").asLong()).isEqualTo(day.getEpochSecond() - 60);
    assertResult(data.get(0).get("results").get(0), 1, 5, 1, 110, 100, 10);
    assertResult(data.get(1).get("results").get(0), 1, 6, 2, 220, 200, 20);
  }

  @Test
  void pagesNeitherRepeatNorSkipABucket() throws Exception {
    Instant from = day.minus(Duration.ofHours(5));
    Instant to = day.plus(Duration.ofHours(4)); // 9 hourly buckets
    List<Long> starts = new ArrayList<>();
    long requests = 0;
    String page = null;
    int pages = 0;
    do {
      Reply r =
          usage(
              admin,
              range(from, to) + "&bucket_width=1h&limit=4" + (page == null ? "" : "&page=" + page));
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
      for (JsonNode b : r.json().get("data")) {
        starts.add(b.get("start_time").asLong());
        for (JsonNode x : b.get("results")) {
          requests += x.get("num_model_requests").asLong();
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
    assertThat(requests).isEqualTo(4); // r1..r4
  }

  @Test
  void badParametersAre400NamingTheParameter() throws Exception {
    String ok = range(day, day.plus(Duration.ofDays(1)));
    Map<String, String> cases =
        Map.ofEntries(
            Map.entry("end_time=" + day.getEpochSecond(), "start_time"),
            Map.entry("start_time=abc", "start_time"),
            Map.entry("start_time=-5", "start_time"),
            Map.entry(
                "start_time=" + day.getEpochSecond() + "&end_time=" + day.getEpochSecond(),
                "end_time"),
            Map.entry(ok + "&bucket_width=2h", "bucket_width"),
            Map.entry(ok + "&group_by=project_id", "group_by"),
            Map.entry(ok + "&limit=0", "limit"),
            Map.entry(ok + "&limit=32", "limit"),
            Map.entry(ok + "&page=page_1", "page"),
            Map.entry(ok + "&page=xyz", "page"),
            Map.entry(ok + "&api_key_ids=k1", "api_key_ids"),
            Map.entry(ok + "&format=xml", "format"),
            Map.entry(ok + "&format=csv&limit=3", "limit"),
            Map.entry(ok + "&project_ids=p1", "project_ids"),
            Map.entry(ok + "&colour=blue", "colour"),
            Map.entry("start_time=0&bucket_width=1m", "start_time"),
            Map.entry("start_time=0&group_by=session_id", "start_time"));
    for (var c : cases.entrySet()) {
      Reply r = usage(admin, c.getKey());
      assertThat(r.status()).as(c.getKey() + " -> " + r).isEqualTo(400);
      assertThat(r.json().at("/error/param").asText()).as(c.getKey()).isEqualTo(c.getValue());
      assertThat(r.json().at("/error/type").asText()).isEqualTo("invalid_request_error");
    }
    assertThat(client.get(PATH + "?" + ok, null).status()).isEqualTo(401);
  }

  @Test
  void csvHasAHeaderRowAndOneRowPerResult() throws Exception {
    Reply r =
        client.send(
            client
                .request(
                    PATH + "?" + range(day.minus(Duration.ofDays(1)), day.plus(Duration.ofDays(1))),
                    a1.plaintext())
                .header("Accept", "text/csv")
                .GET()
                .build());
    assertThat(r.status()).isEqualTo(200);
    assertThat(r.header("content-type")).startsWith("text/csv");
    String[] lines = r.raw().body().split("\n");
    assertThat(lines)
        .containsExactly(
            "start_time,end_time,model,api_key_id,device,session_id,input_tokens,output_tokens,"
                + "num_model_requests,device_time_ns,prefill_time_ns,decode_time_ns",
            (day.getEpochSecond() - 86_400) + "," + day.getEpochSecond() + ",,,,,5,1,1,110,100,10",
            day.getEpochSecond() + "," + (day.getEpochSecond() + 86_400) + ",,,,,6,2,1,220,200,20");
  }

  /**
   * 120,000 sessions in one day, grouped by session as CSV: the body (about 6 MB) arrives in chunks
   * of at most 64 KiB (plus one row), each written before the next is read from the cursor, so the
   * server never holds the whole result.
   */
  @Test
  void csvOfManyRowsIsStreamedInBoundedChunks() throws Exception {
    CreatedApiKey bulk = server.billing().apiKeys().create("bulk", KeyScope.ACCOUNT_ADMIN);
    int n = 120_000;
    Instant at = day.plus(Duration.ofHours(6));
    try (Connection c = db.maintenanceDataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "INSERT INTO usage_records (request_id, api_key_id, account_id, model, device,"
                    + " device_name, device_uuid, timer_kind, driver_version, cuda_version,"
                    + " weight_policy, device_ns, prefill_ns, decode_ns, prompt_tokens,"
                    + " completion_tokens, queue_ns, steps, status, started_at, finished_at,"
                    + " session_id)"
                    + " SELECT 'bulk-' || g, ?, ?, 'm1', 'cpu', 'cpu', '', 'test', '', '', 'test',"
                    + " 3, 2, 1, 1, 1, 0, 1, 'ok', ?::timestamptz,"
                    + " ?::timestamptz + g * interval '1 millisecond',"
                    + " 'session-' || g FROM generate_series(?, ?) g")) {
      // batches of 1000 rows, as the ledger writes them: V6's void trigger takes an advisory lock
      // per row, and one transaction cannot hold 120,000 of them
      for (int from = 1; from <= n; from += 1_000) {
        ps.setLong(1, bulk.keyId());
        ps.setLong(2, bulk.accountId());
        ps.setTimestamp(3, java.sql.Timestamp.from(at));
        ps.setTimestamp(4, java.sql.Timestamp.from(at));
        ps.setInt(5, from);
        ps.setInt(6, from + 999);
        ps.executeUpdate();
      }
    }
    String target =
        PATH
            + "?"
            + range(day, day.plus(Duration.ofDays(1)))
            + "&group_by="
            + URLEncoder.encode("session_id", StandardCharsets.UTF_8)
            + "&format=csv";
    try (Socket s = new Socket("127.0.0.1", server.port())) {
      s.setSoTimeout(120_000);
      OutputStream out = s.getOutputStream();
      out.write(
          ("GET "
                  + target
                  + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + bulk.plaintext()
                  + "\r\nConnection: close\r\n\r\n")
              .getBytes(StandardCharsets.US_ASCII));
      out.flush();
      InputStream in = new BufferedInputStream(s.getInputStream());
      String status = line(in);
      assertThat(status).isEqualTo("HTTP/1.1 200 OK");
      boolean chunked = false;
      for (String h = line(in); !h.isEmpty(); h = line(in)) {
        chunked |= h.equalsIgnoreCase("transfer-encoding: chunked");
      }
      assertThat(chunked).isTrue();
      int chunks = 0;
      long maxChunk = 0;
      long rows = 0;
      long bytes = 0;
      while (true) {
        int size = Integer.parseInt(line(in).trim(), 16);
        if (size == 0) {
          break;
        }
        byte[] chunk = in.readNBytes(size);
        assertThat(chunk).hasSize(size);
        for (byte b : chunk) {
          if (b == '\n') {
            rows++;
          }
        }
        assertThat(line(in)).isEmpty();
        chunks++;
        bytes += size;
        maxChunk = Math.max(maxChunk, size);
      }
      assertThat(rows).isEqualTo(n + 1); // the header row and one row per session
      assertThat(maxChunk).isLessThanOrEqualTo(UsageCompletionsEndpoint.CHUNK_BYTES + 1024);
      assertThat(chunks).isGreaterThan(50);
      assertThat(bytes).isGreaterThan(50L * UsageCompletionsEndpoint.CHUNK_BYTES);
    }
  }

  private static String line(InputStream in) throws IOException {
    ByteArrayOutputStream b = new ByteArrayOutputStream();
    int c;
    while ((c = in.read()) != -1 && c != '\n') {
      if (c != '\r') {
        b.write(c);
      }
    }
    return b.toString(StandardCharsets.US_ASCII);
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
      UsageCompletionsResponse page =
          openai
              .admin()
              .organization()
              .usage()
              .completions(
                  UsageCompletionsParams.builder()
                      .startTime(day.getEpochSecond())
                      .endTime(day.plus(Duration.ofDays(1)).getEpochSecond())
                      .bucketWidth(UsageCompletionsParams.BucketWidth._1H)
                      .addGroupBy(UsageCompletionsParams.GroupBy.MODEL)
                      .limit(2L)
                      .build());
      assertThat(page.data()).hasSize(2);
      assertThat(page.hasMore()).isTrue();
      assertThat(page.nextPage()).contains("page_" + (day.getEpochSecond() + 7_200));
      var results = new ArrayList<Long>();
      page.data().get(0).results().stream()
          .map(x -> x.asOrganizationUsageCompletions())
          .forEach(
              x -> {
                assertThat(x.model()).contains("m1");
                assertThat(x.apiKeyId()).isEmpty(); // not grouped by key
                results.add(x.inputTokens());
                results.add(x.numModelRequests());
              });
      assertThat(results).containsExactly(6L, 1L);
      assertThat(page.data().get(1).startTime()).isEqualTo(day.getEpochSecond() + 3_600);
      assertThat(page.data().get(1).results()).hasSize(2); // m1 (r4) and m2 (r3)
    } finally {
      openai.close();
    }
  }

  @Test
  void theAdminApiCreatesAccountAdminKeys() throws Exception {
    Reply created =
        client.send(
            client
                .request("/admin/keys", ADMIN_TOKEN)
                .header("Content-Type", "application/json")
                .POST(
                    HttpRequest.BodyPublishers.ofString(
                        "{\"account\":\"initech\",\"scope\":\"account_admin\"}"))
                .build());
    assertThat(created.status()).as(created.toString()).isEqualTo(201);
    assertThat(created.json().get("scope").asText()).isEqualTo("account_admin");
    String key = created.json().get("key").asText();
    assertThat(server.billing().apiKeys().authenticate(key).orElseThrow().scope())
        .isEqualTo(KeyScope.ACCOUNT_ADMIN);
    Reply bad =
        client.send(
            client
                .request("/admin/keys", ADMIN_TOKEN)
                .header("Content-Type", "application/json")
                .POST(
                    HttpRequest.BodyPublishers.ofString(
                        "{\"account\":\"initech\",\"scope\":\"root\"}"))
                .build());
    assertThat(bad.status()).isEqualTo(400);
    assertThat(bad.json().at("/error/param").asText()).isEqualTo("scope");
  }
}
