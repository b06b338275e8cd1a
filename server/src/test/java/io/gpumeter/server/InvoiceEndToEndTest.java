package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.fasterxml.jackson.databind.JsonNode;
import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.core.JsonValue;
import com.openai.core.http.StreamResponse;
import com.openai.errors.OpenAIServiceException;
import com.openai.errors.RateLimitException;
import com.openai.errors.SseException;
import com.openai.models.chat.completions.ChatCompletion;
import com.openai.models.chat.completions.ChatCompletionChunk;
import com.openai.models.chat.completions.ChatCompletionCreateParams;
import com.openai.models.chat.completions.ChatCompletionStreamOptions;
import com.openai.models.completions.Completion;
import com.openai.models.completions.CompletionCreateParams;
import com.openai.models.completions.CompletionUsage;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.StepReport;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.RoundingMode;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Issue 10 item 6, end to end through a real server, the real model and the embedded PostgreSQL:
 * account A on a plan with a small included allowance plus prepaid credits (a grant that expires
 * and a top-up that does not), account B prepaid only with a few requests' worth; three keys (two
 * on A); a price; 200 mixed requests run concurrently (completions and chat, streamed and not,
 * through the official OpenAI client where it has the endpoint; some cancelled by a client that
 * resets mid-stream, some stopped by the server's request timeout, B's refused with 429 {@code
 * insufficient_quota} once its credit runs dry). Afterwards, through the operator API and the
 * command line: {@code invoice verify} passes for both accounts, each balance is the sum of its
 * entries to the nano-micro-unit, the deduction order held, DESIGN.md invariant 22's DURABLE bound
 * held, every answered request is charged exactly once and every refused one not at all, and {@code
 * reconcile} finds drift 0.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class InvoiceEndToEndTest {
  private static final String TOKEN = "admin-token-for-invoice-e2e-0123";
  private static final String V1 = "/admin/v1";
  private static final String MODEL = "demo-byte-lm";

  /**
   * B's model. Its own, so that its per-token estimate (per model and device) is moved only by B's
   * requests: the first of them is admitted against B's credit on a loaded machine as on a quiet
   * one, and the rest run it dry.
   */
  private static final String B_MODEL = "tiny-llama-bpe";

  /** 1 USD per device-second: 10^6 nano-micro-units per device-ns. */
  private static final long PRICE = 1_000_000;

  /** A's plan: 0.2 device-seconds a month, used up by the first requests. */
  private static final long INCLUDED_NS = 200_000_000L;

  /** A's expiring grant: 0.3 USD, taken before the top-up (earliest expiry first). */
  private static final long GRANT_MICROS = 300_000;

  /**
   * A's top-up: a million USD, more than the estimates of all of A's requests in flight at once can
   * reserve (a 1000-token request at the meter's worst per-token figure on a loaded machine), so A
   * is never refused.
   */
  private static final long TOPUP_MICROS = 1_000_000_000_000L;

  private static final BigInteger NANO_MICROS_PER_MICRO = BigInteger.valueOf(1_000_000_000L);

  private static final int REQUESTS = 200;
  private static final Pattern ESTIMATE = Pattern.compile("estimated (\\d+) ns");

  private static final AtomicLong maxStepNs = new AtomicLong();
  private static GpumeterServer server;
  private static Database db;
  private static Client http;
  private static Path cliConfig;

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            // TestServers sets pricing.min_lead=0s, so the back-dated price below is taken and
            // applies to every request of the run
            TestServers.config("invoice-e2e")
                .set("admin.token", TOKEN)
                // a 1000-token generation (1000 steps, several ms each in a full batch even on a
                // quiet machine) runs past it; short ones finish well within it
                .set("scheduler.request_timeout", "3s")
                .build(),
            report -> {
              if (report.kind() == StepReport.Kind.CHARGED) {
                maxStepNs.accumulateAndGet(report.measuredNs(), Math::max);
              }
            });
    db = Database.start(server.config().toolDatabaseConfig());
    http = new Client(server.port());
    // the command line beside the server, on the same data folder (as an operator runs it)
    cliConfig = server.config().dataDir().resolve("cli.properties");
    Files.writeString(
        cliConfig,
        "data.dir="
            + server.config().dataDir()
            + "\ndb.binary_cache_dir="
            + TestServers.binaryCache()
            + "\n");
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

  enum Kind {
    COMPLETION,
    CHAT,
    STREAMED_COMPLETION,
    STREAMED_CHAT,
    RAW_COMPLETION,
    RESET_MID_STREAM,
    LONG
  }

  enum Outcome {
    /** 200 with the whole answer and its receipt. */
    ANSWERED,
    /** 504: stopped by the request timeout, charged for its steps. */
    TIMED_OUT,
    /** The client reset the connection mid-stream. */
    CLIENT_RESET,
    /** 429 insufficient_quota. */
    REFUSED
  }

  /** What one request got: its request id (null when refused) and its receipt (or -1). */
  record Result(String account, Kind kind, Outcome outcome, String requestId, long receiptNs) {}

  @Test
  void twoHundredMixedRequestsAreInvoicedExactlyAndChargedOnceEach() throws Exception {
    Instant now = Instant.now();
    long dayAgo = now.minus(Duration.ofDays(1)).getEpochSecond();

    // ------------------------------------------------------------ setup, over the operator API
    long accountA =
        created(post("/accounts", "{\"name\":\"inv-a\",\"currency\":\"USD\"}")).get("id").asLong();
    long accountB =
        created(post("/accounts", "{\"name\":\"inv-b\",\"currency\":\"USD\"}")).get("id").asLong();
    created(
        post(
            "/prices",
            "{\"model\":\"*\",\"device_class\":\"cpu\",\"micros_per_device_second\":"
                + PRICE
                + ",\"effective_from\":"
                + dayAgo
                + "}"));
    created(post("/plans", "{\"name\":\"inv-small\",\"included_device_ns\":" + INCLUDED_NS + "}"));
    ok(post("/accounts/inv-a/plan", "{\"plan\":\"inv-small\",\"effective_from\":" + dayAgo + "}"));
    long grantId =
        created(
                post(
                    "/accounts/inv-a/credits",
                    "{\"kind\":\"grant\",\"amount_micros\":"
                        + GRANT_MICROS
                        + ",\"expires_at\":"
                        + now.plus(Duration.ofDays(30)).getEpochSecond()
                        + ",\"note\":\"expiring\"}"))
            .get("id")
            .asLong();
    long topupId =
        created(
                post(
                    "/accounts/inv-a/credits",
                    "{\"kind\":\"topup\",\"amount_micros\":" + TOPUP_MICROS + "}"))
            .get("id")
            .asLong();
    JsonNode a1 = created(post("/keys", "{\"account\":\"inv-a\",\"label\":\"a-one\"}"));
    JsonNode a2 = created(post("/keys", "{\"account\":\"inv-a\",\"label\":\"a-two\"}"));
    JsonNode b1 = created(post("/keys", "{\"account\":\"inv-b\",\"label\":\"b-one\"}"));

    // B gets three requests' estimates: the refusal of an empty account states the estimate
    Reply probe =
        http.post("/v1/completions", b1.get("key").asText(), completion(B_MODEL, "Invoice 2 ", 8));
    assertThat(probe.status()).as(probe.toString()).isEqualTo(429);
    Matcher m = ESTIMATE.matcher(probe.json().at("/error/message").asText());
    assertThat(m.find()).as(probe.toString()).isTrue();
    long bCredit = Math.max(1, 3 * Long.parseLong(m.group(1)) * PRICE / 1_000_000_000L);
    created(
        post(
            "/accounts/inv-b/credits",
            "{\"kind\":\"topup\",\"amount_micros\":" + bCredit + ",\"note\":\"three estimates\"}"));
    Instant from = Instant.now();

    // ------------------------------------------------------------ 200 mixed requests at once
    Map<String, OpenAIClient> clients = new HashMap<>();
    for (JsonNode k : List.of(a1, a2, b1)) {
      clients.put(
          k.get("key").asText(),
          OpenAIOkHttpClient.builder()
              .apiKey(k.get("key").asText())
              .baseUrl("http://127.0.0.1:" + server.port() + "/v1")
              .maxRetries(0)
              .timeout(Duration.ofSeconds(120))
              .build());
    }
    Kind[] aKinds = {
      Kind.COMPLETION,
      Kind.CHAT,
      Kind.STREAMED_COMPLETION,
      Kind.STREAMED_CHAT,
      Kind.RESET_MID_STREAM,
      Kind.LONG,
      Kind.RAW_COMPLETION,
      Kind.CHAT,
      Kind.STREAMED_CHAT,
      Kind.COMPLETION
    };
    Kind[] bKinds = {Kind.COMPLETION, Kind.CHAT, Kind.STREAMED_COMPLETION, Kind.RAW_COMPLETION};
    List<Callable<Result>> tasks = new ArrayList<>();
    for (int i = 0; i < REQUESTS; i++) {
      int n = i;
      JsonNode key = i % 3 == 0 ? a1 : i % 3 == 1 ? a2 : b1;
      String account = key == b1 ? "inv-b" : "inv-a";
      Kind kind = key == b1 ? bKinds[(i / 3) % bKinds.length] : aKinds[(i / 3) % aKinds.length];
      String secret = key.get("key").asText();
      tasks.add(() -> run(account, kind, secret, clients.get(secret), n));
    }
    List<Result> results = new ArrayList<>();
    // as many clients as scheduler.max_running: all at once, with little queueing
    ExecutorService pool = Executors.newFixedThreadPool(32);
    try {
      for (Future<Result> f : pool.invokeAll(tasks, 4, TimeUnit.MINUTES)) {
        results.add(f.get());
      }
    } finally {
      pool.shutdownNow();
      clients.values().forEach(OpenAIClient::close);
    }
    Map<String, Map<Outcome, Long>> tally =
        results.stream()
            .collect(
                Collectors.groupingBy(
                    Result::account,
                    Collectors.groupingBy(Result::outcome, Collectors.counting())));
    System.out.println("invoice e2e: outcomes " + tally + ", longest step " + maxStepNs + " ns");
    assertThat(results).hasSize(REQUESTS);
    assertThat(tally.get("inv-a"))
        .as("A is funded: never refused")
        .doesNotContainKey(Outcome.REFUSED);
    assertThat(tally.get("inv-a").getOrDefault(Outcome.TIMED_OUT, 0L)).as("timed out").isPositive();
    assertThat(tally.get("inv-a").getOrDefault(Outcome.CLIENT_RESET, 0L)).as("reset").isPositive();
    assertThat(tally.get("inv-b").getOrDefault(Outcome.REFUSED, 0L))
        .as("B ran dry and was refused")
        .isPositive();
    assertThat(tally.get("inv-b").getOrDefault(Outcome.ANSWERED, 0L)).as("B served").isPositive();
    assertThat(results.stream().filter(r -> r.outcome() == Outcome.ANSWERED).map(Result::kind))
        .as("every kind of request was answered at least once")
        .contains(
            Kind.COMPLETION,
            Kind.CHAT,
            Kind.STREAMED_COMPLETION,
            Kind.STREAMED_CHAT,
            Kind.RAW_COMPLETION);

    // ------------------------------------------------------------ each answer charged once
    List<Result> charged =
        results.stream().filter(r -> r.outcome() != Outcome.REFUSED).collect(Collectors.toList());
    long keyA1 = a1.get("id").asLong();
    long keyA2 = a2.get("id").asLong();
    long keyB1 = b1.get("id").asLong();
    await()
        .atMost(Duration.ofSeconds(60))
        .until(() -> count("usage_records", keyA1, keyA2, keyB1) >= charged.size());
    Map<String, Stored> stored = stored(keyA1, keyA2, keyB1);
    assertThat(stored)
        .as("one row per answered request and none for a refused one")
        .hasSize(charged.size());
    for (Result r : charged) {
      Stored s = stored.get(r.requestId());
      assertThat(s).as("stored once: " + r).isNotNull();
      assertThat(s.rows()).as("one row: " + r).isEqualTo(1);
      assertThat(s.prices()).as("priced once: " + r).isEqualTo(1);
      assertThat(s.charges()).as("deducted once: " + r).isEqualTo(1);
      assertThat(s.voids()).as("not voided: " + r).isZero();
      assertThat(s.accountId()).isEqualTo(r.account().equals("inv-a") ? accountA : accountB);
      switch (r.outcome()) {
        case ANSWERED -> {
          assertThat(s.status()).as(r.toString()).isEqualTo("ok");
          assertThat(s.deviceNs()).as("receipt = stored charge: " + r).isEqualTo(r.receiptNs());
        }
        case TIMED_OUT -> assertThat(s.status()).as(r.toString()).isEqualTo("timeout");
        case CLIENT_RESET -> assertThat(s.status()).as(r.toString()).isIn("cancelled", "timeout");
        default -> throw new AssertionError("refused but stored: " + r);
      }
    }

    // ------------------------------------------------------------ invoices verify (CLI and API)
    for (String account : List.of("inv-a", "inv-b")) {
      long invoicedRequests = 0;
      long invoicedNs = 0;
      for (JsonNode inv : ok(get("/accounts/" + account + "/invoices")).get("data")) {
        String id = inv.get("id").asText();
        String month = id.substring(id.lastIndexOf('_') + 1);
        JsonNode v = ok(get("/invoices/" + id + "/verify"));
        assertThat(v.get("ok").asBoolean()).as(v.toString()).isTrue();
        assertThat(v.get("unpriced_records").asLong()).as(v.toString()).isZero();
        Cli verified = cli("invoice", "verify", "--account", account, "--month", month);
        assertThat(verified.status()).as(verified.toString()).isZero();
        for (JsonNode line : inv.get("lines")) {
          invoicedRequests += line.get("requests").asLong();
          invoicedNs += line.get("device_ns").asLong();
        }
      }
      long accountId = account.equals("inv-a") ? accountA : accountB;
      assertThat(invoicedRequests)
          .as(account + ": the invoices hold every charge")
          .isEqualTo(charged.stream().filter(r -> r.account().equals(account)).count());
      assertThat(invoicedNs).as(account).isEqualTo(storedDeviceNs(accountId));
    }

    // ------------------------------------------------------------ balances = their entries
    for (String account : List.of("inv-a", "inv-b")) {
      long accountId = account.equals("inv-a") ? accountA : accountB;
      JsonNode balance = ok(get("/accounts/" + account + "/balance"));
      BigInteger exact = new BigInteger(balance.get("credit_remaining_exact_nano_micros").asText());
      assertThat(exact)
          .as(account + ": the balance is the sum of its entries")
          .isEqualTo(entries(accountId, null));
      assertThat(balance.get("credit_remaining_micros").asLong())
          .as(account + ": shown once rounded, half to even")
          .isEqualTo(
              new BigDecimal(exact)
                  .movePointLeft(9)
                  .setScale(0, RoundingMode.HALF_EVEN)
                  .longValueExact());
      // the entries are the grants less the charges' credits, nothing else moved
      assertThat(exact)
          .as(account + ": granted less what the charges took from credits")
          .isEqualTo(granted(accountId).subtract(sum("credit_nmicros", accountId)));
      BigInteger listed = BigInteger.ZERO;
      for (JsonNode c : ok(get("/accounts/" + account + "/credits")).get("data")) {
        listed = listed.add(new BigInteger(c.get("remaining_exact_nano_micros").asText()));
      }
      assertThat(listed).as(account + ": the credits add up to the balance").isEqualTo(exact);
    }

    // ------------------------------------------------------------ the order of deduction (A)
    JsonNode balanceA = ok(get("/accounts/inv-a/balance"));
    assertThat(balanceA.get("allowance_used_device_ns").asLong())
        .as("the allowance is taken first, and all of it")
        .isEqualTo(INCLUDED_NS);
    assertThat(entries(accountA, grantId)).as("then the expiring grant, all of it").isZero();
    assertThat(entries(accountA, topupId))
        .as("then the top-up, the rest")
        .isLessThan(BigInteger.valueOf(TOPUP_MICROS).multiply(NANO_MICROS_PER_MICRO))
        .isEqualTo(
            BigInteger.valueOf(TOPUP_MICROS + GRANT_MICROS)
                .multiply(NANO_MICROS_PER_MICRO)
                .subtract(sum("credit_nmicros", accountA)));
    assertThat(sum("overspend_nmicros", accountA)).as("A never ran dry").isZero();
    assertThat(sum("postpaid_nmicros", accountA).add(sum("postpaid_nmicros", accountB)))
        .as("neither account allows postpaid")
        .isZero();

    // ------------------------------------------------------------ the overspend bound (B)
    // Invariant 22, DURABLE: at most one step's charge per request that was running when B's
    // funds ran out; every such request is one of B's charged ones, and no step was longer than
    // the longest the step listener saw.
    long bCharged = charged.stream().filter(r -> r.account().equals("inv-b")).count();
    BigInteger overspendB = sum("overspend_nmicros", accountB);
    BigInteger bound =
        BigInteger.valueOf(bCharged)
            .multiply(BigInteger.valueOf(maxStepNs.get()))
            .multiply(BigInteger.valueOf(PRICE));
    System.out.printf(
        "invoice e2e: B overspend %s of bound %s nano-micro-units (%d charged requests)%n",
        overspendB, bound, bCharged);
    assertThat(overspendB).as("B's overspend within the DURABLE bound").isLessThanOrEqualTo(bound);
    assertThat(entries(accountB, null))
        .as("B's credit is used up, never below zero")
        .isGreaterThanOrEqualTo(BigInteger.ZERO)
        .isLessThan(BigInteger.valueOf(bCredit).multiply(NANO_MICROS_PER_MICRO));

    // ------------------------------------------------------------ reconcile: drift 0
    Instant to = Instant.now();
    String path = "/admin/reconcile?from=" + from + "&to=" + to;
    await()
        .atMost(Duration.ofSeconds(30))
        .untilAsserted(
            () -> {
              Reply r = http.get(path, TOKEN);
              assertThat(r.status()).as(r.toString()).isEqualTo(200);
              assertThat(r.json().get("total_drift_ns").asLong()).as(r.toString()).isZero();
              assertThat(r.json().get("exact").asBoolean()).as(r.toString()).isTrue();
            });
    Cli reconciled = cli("reconcile", "--from", from.toString(), "--to", to.toString());
    assertThat(reconciled.status()).as(reconciled.toString()).isZero();
    assertThat(reconciled.out()).contains("total drift_ns: 0\n");
  }

  // ---------------------------------------------------------------------- one request

  private static Result run(String account, Kind kind, String key, OpenAIClient openai, int i)
      throws Exception {
    String prompt = "Invoice " + i + " ";
    String model = account.equals("inv-b") ? B_MODEL : MODEL;
    try {
      return switch (kind) {
        case COMPLETION -> {
          Completion c =
              openai
                  .completions()
                  .create(
                      CompletionCreateParams.builder()
                          .model(model)
                          .prompt(prompt)
                          .maxTokens(8)
                          .build());
          yield new Result(
              account, kind, Outcome.ANSWERED, c.id(), deviceNs(c.usage().orElseThrow()));
        }
        case CHAT -> {
          ChatCompletion c =
              openai
                  .chat()
                  .completions()
                  .create(
                      ChatCompletionCreateParams.builder()
                          .model(model)
                          .addUserMessage(prompt)
                          .maxCompletionTokens(8)
                          .build());
          yield new Result(
              account, kind, Outcome.ANSWERED, c.id(), deviceNs(c.usage().orElseThrow()));
        }
        case STREAMED_COMPLETION -> {
          List<Completion> chunks = new ArrayList<>();
          try (StreamResponse<Completion> s =
              openai
                  .completions()
                  .createStreaming(
                      CompletionCreateParams.builder()
                          .model(model)
                          .prompt(prompt)
                          .maxTokens(8)
                          .streamOptions(
                              ChatCompletionStreamOptions.builder().includeUsage(true).build())
                          .build())) {
            s.stream().forEach(chunks::add);
          } catch (SseException e) {
            // the request timeout ended the stream with an error event (charged, status timeout)
            yield midStreamError(account, kind, e, chunks.isEmpty() ? null : chunks.get(0).id());
          }
          Completion last = chunks.get(chunks.size() - 1);
          yield new Result(
              account, kind, Outcome.ANSWERED, last.id(), deviceNs(last.usage().orElseThrow()));
        }
        case STREAMED_CHAT -> {
          List<ChatCompletionChunk> chunks = new ArrayList<>();
          try (StreamResponse<ChatCompletionChunk> s =
              openai
                  .chat()
                  .completions()
                  .createStreaming(
                      ChatCompletionCreateParams.builder()
                          .model(model)
                          .addUserMessage(prompt)
                          .maxCompletionTokens(8)
                          .streamOptions(
                              ChatCompletionStreamOptions.builder().includeUsage(true).build())
                          .build())) {
            s.stream().forEach(chunks::add);
          } catch (SseException e) {
            yield midStreamError(account, kind, e, chunks.isEmpty() ? null : chunks.get(0).id());
          }
          ChatCompletionChunk last = chunks.get(chunks.size() - 1);
          yield new Result(
              account, kind, Outcome.ANSWERED, last.id(), deviceNs(last.usage().orElseThrow()));
        }
        case RAW_COMPLETION, LONG -> {
          Reply r =
              http.post(
                  "/v1/completions", key, completion(model, prompt, kind == Kind.LONG ? 1000 : 6));
          yield fromReply(account, kind, r);
        }
        case RESET_MID_STREAM -> resetMidStream(account, key, prompt);
      };
    } catch (RateLimitException e) {
      assertThat(e.code()).as(e.toString()).hasValue("insufficient_quota");
      return new Result(account, kind, Outcome.REFUSED, null, -1);
    } catch (OpenAIServiceException e) {
      assertThat(e.statusCode()).as(e.toString()).isEqualTo(504);
      assertThat(e.code()).hasValue("timeout");
      return new Result(
          account, kind, Outcome.TIMED_OUT, e.headers().values("x-request-id").get(0), -1);
    }
  }

  private static Result midStreamError(String account, Kind kind, SseException e, String id) {
    assertThat(id).as("an error event after the stream began: " + e).isNotNull();
    assertThat(e.code()).as(e.toString()).hasValue("timeout");
    return new Result(account, kind, Outcome.TIMED_OUT, id, -1);
  }

  private static Result fromReply(String account, Kind kind, Reply r) {
    String id = r.header("x-request-id");
    switch (r.status()) {
      case 200 -> {
        return new Result(
            account, kind, Outcome.ANSWERED, id, r.json().at("/usage/device_time_ns").asLong());
      }
      case 504 -> {
        assertThat(r.json().at("/error/code").asText()).as(r.toString()).isEqualTo("timeout");
        return new Result(account, kind, Outcome.TIMED_OUT, id, -1);
      }
      case 429 -> {
        assertThat(r.json().at("/error/code").asText())
            .as(r.toString())
            .isEqualTo("insufficient_quota");
        return new Result(account, kind, Outcome.REFUSED, null, -1);
      }
      default -> throw new AssertionError("unexpected answer " + r);
    }
  }

  /** A long streamed completion whose client resets the connection after two events. */
  private static Result resetMidStream(String account, String key, String prompt) throws Exception {
    try (Socket s = new Socket("127.0.0.1", server.port())) {
      byte[] body =
          ("{\"model\":\""
                  + MODEL
                  + "\",\"prompt\":\""
                  + prompt
                  + "\",\"max_tokens\":1000,"
                  + "\"stream\":true}")
              .getBytes(StandardCharsets.UTF_8);
      OutputStream out = s.getOutputStream();
      out.write(
          ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + key
                  + "\r\nContent-Type: application/json\r\nContent-Length: "
                  + body.length
                  + "\r\n\r\n")
              .getBytes(StandardCharsets.US_ASCII));
      out.write(body);
      out.flush();
      BufferedReader in =
          new BufferedReader(new InputStreamReader(s.getInputStream(), StandardCharsets.UTF_8));
      String status = in.readLine();
      String id = null;
      String line;
      while (!(line = in.readLine()).isEmpty()) {
        if (line.toLowerCase(Locale.ROOT).startsWith("x-request-id:")) {
          id = line.substring(line.indexOf(':') + 1).trim();
        }
      }
      if (status.contains(" 504 ")) {
        return new Result(account, Kind.RESET_MID_STREAM, Outcome.TIMED_OUT, id, -1);
      }
      assertThat(status).as(status + " " + id).isEqualTo("HTTP/1.1 200 OK");
      int events = 0;
      while (events < 2 && (line = in.readLine()) != null) {
        if (line.startsWith("data: {")) {
          events++;
        }
      }
      assertThat(events).as("two events before the reset").isEqualTo(2);
      s.setSoLinger(true, 0); // a reset, which the server sees (a FIN would be a half-close)
      return new Result(account, Kind.RESET_MID_STREAM, Outcome.CLIENT_RESET, id, -1);
    }
  }

  static String completion(String model, String prompt, int maxTokens) {
    return "{\"model\":\""
        + model
        + "\",\"prompt\":\""
        + prompt
        + "\",\"max_tokens\":"
        + maxTokens
        + ",\"temperature\":0}";
  }

  private static long deviceNs(CompletionUsage u) {
    JsonValue v = u._additionalProperties().get("device_time_ns");
    assertThat(v).as("usage carries device_time_ns").isNotNull();
    return v.convert(Long.class);
  }

  // ---------------------------------------------------------------------- operator API

  private static Reply get(String path) throws Exception {
    return http.get(V1 + path, TOKEN);
  }

  private static Reply post(String path, String body) throws Exception {
    return http.post(V1 + path, TOKEN, body);
  }

  private static JsonNode ok(Reply r) {
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    return r.json();
  }

  private static JsonNode created(Reply r) {
    assertThat(r.status()).as(r.toString()).isEqualTo(201);
    return r.json();
  }

  // ---------------------------------------------------------------------- the command line

  record Cli(int status, String out, String err) {}

  private static Cli cli(String... args) {
    String[] all = java.util.Arrays.copyOf(args, args.length + 2);
    all[args.length] = "--config";
    all[args.length + 1] = cliConfig.toString();
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int status =
        Main.run(
            all,
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8));
    return new Cli(
        status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }

  // ---------------------------------------------------------------------- the database

  /** One stored request: its rows in the ledger, its price and deduction rows. */
  record Stored(
      long accountId, String status, long deviceNs, int rows, int prices, int charges, int voids) {}

  private static Map<String, Stored> stored(long... keys) throws SQLException {
    Map<String, Stored> out = new HashMap<>();
    SettledCharges.settle(db.dataSource());
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT u.request_id, min(u.account_id), min(u.status), min(u.device_ns),"
                    + " count(*),"
                    + " (SELECT count(*) FROM charge_prices p WHERE p.request_id = u.request_id),"
                    + " (SELECT count(*) FROM charge_deductions d"
                    + "   WHERE d.request_id = u.request_id AND d.kind = 'charge'),"
                    + " (SELECT count(*) FROM charge_deductions d"
                    + "   WHERE d.request_id = u.request_id AND d.kind = 'void')"
                    + " FROM usage_records u WHERE u.api_key_id = ANY (?)"
                    + " GROUP BY u.request_id")) {
      ps.setArray(1, c.createArrayOf("bigint", boxed(keys)));
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          out.put(
              rs.getString(1),
              new Stored(
                  rs.getLong(2),
                  rs.getString(3),
                  rs.getLong(4),
                  rs.getInt(5),
                  rs.getInt(6),
                  rs.getInt(7),
                  rs.getInt(8)));
        }
      }
    }
    return out;
  }

  private static Long[] boxed(long... keys) {
    Long[] b = new Long[keys.length];
    for (int i = 0; i < keys.length; i++) {
      b[i] = keys[i];
    }
    return b;
  }

  private static long count(String table, long... keys) throws SQLException {
    SettledCharges.settle(db.dataSource());
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT count(*) FROM " + table + " WHERE api_key_id = ANY (?)")) {
      ps.setArray(1, c.createArrayOf("bigint", boxed(keys)));
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }

  private static long storedDeviceNs(long accountId) throws SQLException {
    return querySum(
            "SELECT coalesce(sum(device_ns), 0) FROM usage_records WHERE account_id = ?", accountId)
        .longValueExact();
  }

  /** Σ of the account's balance entries (of one grant, when {@code grantId} is not null). */
  private static BigInteger entries(long accountId, Long grantId) throws SQLException {
    if (grantId == null) {
      return querySum(
          "SELECT coalesce(sum(amount_nmicros), 0) FROM balance_entries WHERE account_id = ?",
          accountId);
    }
    return querySum(
        "SELECT coalesce(sum(amount_nmicros), 0) FROM balance_entries WHERE account_id = "
            + accountId
            + " AND grant_id = ?",
        grantId);
  }

  private static BigInteger granted(long accountId) throws SQLException {
    return querySum(
        "SELECT coalesce(sum(amount_micros), 0) * 1000000000 FROM credit_grants WHERE account_id = ?",
        accountId);
  }

  private static BigInteger sum(String column, long accountId) throws SQLException {
    return querySum(
        "SELECT coalesce(sum(" + column + "), 0) FROM charge_deductions WHERE account_id = ?",
        accountId);
  }

  private static BigInteger querySum(String sql, long arg) throws SQLException {
    SettledCharges.settle(db.dataSource());
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps = c.prepareStatement(sql)) {
      ps.setLong(1, arg);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getBigDecimal(1).toBigIntegerExact();
      }
    }
  }
}
