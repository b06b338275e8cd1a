package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.StepListener;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;

/**
 * The HTTP edge of a real server on loopback, with raw sockets where a client library would hide
 * the behaviour: bad percent-encoding, half-closed clients, deep pipelining, out-of-range numbers,
 * and the per-key share of the admission queue.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class HttpEdgeTest {
  private static final Pattern STATUS = Pattern.compile("HTTP/1\\.1 (\\d{3}) ");

  private static final String ADMIN_TOKEN = "admin-token-for-edge-tests-0123456789";

  /** The fuzz test's seed: the same 10,000 requests on every run. */
  static final long FUZZ_SEED = 0x6770756d65746572L;

  static final int FUZZ_CASES = 10_000;

  private static GpumeterServer server;
  private static Client client;
  private static String key;
  private static Instant startedAt;

  @BeforeAll
  static void start() throws Exception {
    // One sequence at a time, 8 waiting, of which one key may hold 2: a flood of one key is
    // refused long before the queue is full for another.
    startedAt = Instant.now();
    server =
        GpumeterServer.start(
            TestServers.config("edge")
                .set("admin.token", ADMIN_TOKEN)
                // the fuzz run sends thousands of wrong keys from 127.0.0.1 on purpose; the
                // failed-authentication throttle (KeyAdminTest, AuthThrottleTest) would then
                // refuse the checks that the server still serves normally afterwards
                .set("auth.max_failures", "1000000")
                .set("scheduler.max_running", "1")
                .set("scheduler.queue_capacity", "8")
                .set("scheduler.max_queued_per_key", "2")
                .build(),
            StepListener.NONE);
    client = new Client(server.port());
    key = server.billing().apiKeys().create("edge-tests").plaintext();
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  /** Sends {@code raw}, half-closes, and reads until the server closes. */
  static String exchangeRaw(String raw) throws Exception {
    try (Socket s = new Socket("127.0.0.1", server.port())) {
      s.setSoTimeout(60_000);
      OutputStream out = s.getOutputStream();
      out.write(raw.getBytes(StandardCharsets.UTF_8));
      out.flush();
      s.shutdownOutput();
      return new String(s.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    }
  }

  static List<String> statuses(String responses) {
    List<String> out = new ArrayList<>();
    Matcher m = STATUS.matcher(responses);
    while (m.find()) {
      out.add(m.group(1));
    }
    return out;
  }

  static String completionRequest(String body, String extraHeaders) {
    return "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + key
        + "\r\nContent-Type: application/json\r\nContent-Length: "
        + body.getBytes(StandardCharsets.UTF_8).length
        + "\r\n"
        + extraHeaders
        + "\r\n"
        + body;
  }

  private static JsonNode error(Reply r, int status, String param) {
    assertThat(r.status()).as(r.toString()).isEqualTo(status);
    JsonNode e = r.json().get("error");
    assertThat(e).as(r.toString()).isNotNull();
    assertThat(e.get("type").asText()).isEqualTo("invalid_request_error");
    if (param == null) {
      assertThat(e.get("param").isNull()).as(r.toString()).isTrue();
    } else {
      assertThat(e.get("param").asText()).as(r.toString()).isEqualTo(param);
    }
    return e;
  }

  @Test
  @Order(1)
  void badPercentEncodingIs400AndTheConnectionServesOn() throws Exception {
    String all =
        exchangeRaw(
            "GET /healthz%zz HTTP/1.1\r\nHost: x\r\n\r\n"
                + "GET /v1/usage?start=%zz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + key
                + "\r\n\r\n"
                + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assertThat(statuses(all)).as(all).containsExactly("400", "400", "200");
    assertThat(all).contains("\"code\":\"invalid_url_encoding\"").contains("{\"status\":\"ok\"}");
  }

  @Test
  @Order(2)
  void halfClosedClientGetsItsCompletion() throws Exception {
    String all =
        exchangeRaw(
            completionRequest(
                "{\"model\":\"demo-byte-lm\",\"prompt\":\"Half \",\"max_tokens\":4,"
                    + "\"temperature\":0}",
                ""));
    assertThat(statuses(all)).as(all).containsExactly("200");
    assertThat(all).contains("\"object\":\"text_completion\"");
  }

  /** Today's bound is 16 waiting: 40 behind a generation are all answered, in order. */
  @Test
  @Order(3)
  void deepPipeliningAnswersEveryRequestInOrder() throws Exception {
    StringBuilder reqs =
        new StringBuilder(
            completionRequest(
                "{\"model\":\"demo-byte-lm\",\"prompt\":\"Pipe \",\"max_tokens\":20,"
                    + "\"temperature\":0}",
                ""));
    int n = 40;
    for (int i = 0; i < n; i++) {
      reqs.append("GET /nowhere-").append(i).append(" HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    String all = exchangeRaw(reqs.toString());
    List<String> st = statuses(all);
    assertThat(st).hasSize(n + 1);
    assertThat(st.get(0)).as(all).isEqualTo("200");
    assertThat(st.subList(1, n + 1)).containsOnly("404");
    int at = 0;
    for (int i = 0; i < n; i++) {
      int next = all.indexOf("/nowhere-" + i + ")", at);
      assertThat(next).as("response to request " + i + " in order").isGreaterThan(at);
      at = next;
    }
  }

  @Test
  @Order(4)
  void outOfRangeNumbersNameTheParameterAndTheRange() throws Exception {
    String[][] cases = {
      {"\"max_tokens\": 1e30", "max_tokens", "from 1 to 1024"},
      {"\"max_tokens\": 1e400", "max_tokens", "from 1 to 1024"},
      {"\"max_tokens\": -99999999999999999999999", "max_tokens", "from 1 to 1024"},
      {"\"max_tokens\": 0", "max_tokens", "from 1 to 1024"},
      {"\"max_tokens\": 1025", "max_tokens", "from 1 to 1024"},
      {"\"seed\": 99999999999999999999", "seed", "to 9223372036854775807"},
      {"\"seed\": -1e300", "seed", "from -9223372036854775808"},
      {"\"temperature\": 1e400", "temperature", "between 0 and 2"},
      {"\"temperature\": -0.5", "temperature", "between 0 and 2"},
    };
    for (String[] c : cases) {
      Reply r =
          client.post(
              "/v1/completions",
              key,
              "{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", " + c[0] + "}");
      JsonNode e = error(r, 400, c[1]);
      assertThat(e.get("code").asText()).as(c[0]).isEqualTo("invalid_value");
      assertThat(e.get("message").asText()).as(c[0]).contains(c[2]);
    }
    // a fraction is the wrong type, not a range
    assertThat(
            error(
                    client.post(
                        "/v1/completions",
                        key,
                        "{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", \"max_tokens\": 2.5}"),
                    400,
                    "max_tokens")
                .get("code")
                .asText())
        .isEqualTo("invalid_type");
    // 5.0 is the integer 5
    Reply ok =
        client.post(
            "/v1/completions",
            key,
            "{\"model\": \"demo-byte-lm\", \"prompt\": \"x\", \"max_tokens\": 2.0}");
    assertThat(ok.status()).as(ok.toString()).isEqualTo(200);
  }

  @Test
  @Order(5)
  void outOfRangeUsageTimesAre400NotDatabaseErrors() throws Exception {
    for (String q :
        new String[] {
          "start=%2B999999999-01-01T00:00:00Z",
          "end=%2B999999999-01-01T00:00:00Z",
          "start=-999999999-01-01T00:00:00Z&end=1970-01-02T00:00:00Z",
          "start=1969-12-31T00:00:00Z&end=1970-01-02T00:00:00Z",
          "start=%2B10000-01-01T00:00:00Z&end=9999-12-31T00:00:00Z",
        }) {
      Reply r = client.get("/v1/usage?" + q, key);
      JsonNode e = error(r, 400, q.startsWith("end") ? "end" : "start");
      assertThat(e.get("message").asText())
          .as(q)
          .contains("1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z");
    }
    Reply edge = client.get("/v1/usage?start=9999-12-30T00:00:00Z&end=9999-12-31T23:59:59Z", key);
    assertThat(edge.status()).as(edge.toString()).isEqualTo(200);
  }

  /**
   * One key floods with more requests than its share of the queue: it gets 429s with Retry-After,
   * and another key's requests are still admitted and answered.
   */
  @Test
  @Order(6)
  void oneKeyFloodingDoesNotCause429sForAnother() throws Exception {
    String other = server.billing().apiKeys().create("edge-other").plaintext();
    List<CompletableFuture<Reply>> flood = new ArrayList<>();
    for (int i = 0; i < 12; i++) {
      flood.add(
          client.postAsync(
              "/v1/completions",
              key,
              "{\"model\":\"demo-byte-lm\",\"prompt\":\"Flood "
                  + i
                  + " \",\"max_tokens\":200,\"temperature\":0}"));
    }
    // Wait until the flood is in: most of it refused at once, the key's share taken. Without the
    // share, 1 running + 8 waiting would fill the queue and the other key would get 429s.
    await()
        .atMost(60, TimeUnit.SECONDS)
        .until(() -> flood.stream().filter(CompletableFuture::isDone).count() >= 12 - 4);
    List<CompletableFuture<Reply>> others = new ArrayList<>();
    for (int i = 0; i < 2; i++) {
      others.add(
          client.postAsync(
              "/v1/completions",
              other,
              "{\"model\":\"demo-byte-lm\",\"prompt\":\"Other "
                  + i
                  + " \",\"max_tokens\":2,\"temperature\":0}"));
    }
    for (CompletableFuture<Reply> f : others) {
      Reply r = f.get(120, TimeUnit.SECONDS);
      assertThat(r.status()).as("the other key is admitted: " + r).isEqualTo(200);
    }
    int tooMany = 0;
    for (CompletableFuture<Reply> f : flood) {
      Reply r = f.get(120, TimeUnit.SECONDS);
      if (r.status() == 429) {
        assertThat(r.header("retry-after")).isEqualTo("1");
        assertThat(r.json().get("error").get("code").asText()).isEqualTo("queue_full");
        assertThat(r.json().get("error").get("message").asText()).contains("share of the queue");
        tooMany++;
      } else {
        assertThat(r.status()).as(r.toString()).isEqualTo(200);
      }
    }
    assertThat(tooMany).as("the flooding key was held to its share").isGreaterThanOrEqualTo(6);
  }

  /**
   * 10,000 mutated requests (see {@link HttpMutator}), one per connection, sent and then
   * half-closed, from 4 threads: no 5xx, no connection closed without an answer unless the framing
   * was broken, and afterwards the server serves normally and reconciliation has no drift.
   */
  @Test
  @Order(100)
  void fuzzedRequestsNeverGet5xxOrSilence() throws Exception {
    HttpMutator mutator = new HttpMutator(FUZZ_SEED, key);
    int threads = 4;
    ConcurrentLinkedQueue<String> failures = new ConcurrentLinkedQueue<>();
    AtomicInteger completions = new AtomicInteger();
    AtomicInteger silentFramingErrors = new AtomicInteger();
    long t0 = System.nanoTime();
    ExecutorService pool = Executors.newFixedThreadPool(threads);
    try {
      List<Future<?>> done = new ArrayList<>();
      for (int t = 0; t < threads; t++) {
        int first = t;
        done.add(
            pool.submit(
                () -> {
                  for (int i = first; i < FUZZ_CASES; i += threads) {
                    HttpMutator.Case c = mutator.generate(i);
                    String problem = fuzzOne(c, completions, silentFramingErrors);
                    if (problem != null) {
                      failures.add(problem);
                    }
                  }
                  return null;
                }));
      }
      for (Future<?> f : done) {
        f.get(4, TimeUnit.MINUTES);
      }
    } finally {
      pool.shutdownNow();
    }
    long seconds = TimeUnit.NANOSECONDS.toSeconds(System.nanoTime() - t0);
    System.out.printf(
        "fuzz: %d cases in %d s, %d completions answered, %d framing errors closed silently%n",
        FUZZ_CASES, seconds, completions.get(), silentFramingErrors.get());
    assertThat(failures.size())
        .as(
            () ->
                "failed fuzz cases; the first:\n"
                    + String.join("\n\n", failures.stream().limit(5).toList()))
        .isZero();
    assertThat(completions.get()).as("the fuzz reached the model").isGreaterThan(100);

    // serves normally afterwards
    Reply r =
        client.post(
            "/v1/completions",
            key,
            "{\"model\":\"demo-byte-lm\",\"prompt\":\"After \",\"max_tokens\":3}");
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    assertThat(client.get("/healthz", null).status()).isEqualTo(200);
    Reply ready = client.get("/readyz", null);
    assertThat(ready.status()).as(ready.toString()).isEqualTo(200);
    assertThat(ready.json().get("degraded").asBoolean()).as(ready.toString()).isFalse();

    // no drift: measured = charged + system, and the ledger holds every charge
    Reply rec =
        client.get("/admin/reconcile?from=" + startedAt + "&to=" + Instant.now(), ADMIN_TOKEN);
    assertThat(rec.status()).as(rec.toString()).isEqualTo(200);
    JsonNode lines = rec.json().get("lines");
    assertThat(lines).as(rec.toString()).isNotEmpty();
    for (JsonNode line : lines) {
      assertThat(line.get("drift_ns").asLong()).as(rec.toString()).isZero();
      assertThat(line.get("ledger_ns").asLong())
          .as(rec.toString())
          .isEqualTo(line.get("charged_ns").asLong());
    }
  }

  /** Runs one case; returns what went wrong, or null. */
  private static String fuzzOne(
      HttpMutator.Case c, AtomicInteger completions, AtomicInteger silentFramingErrors) {
    byte[] got;
    try (Socket s = new Socket()) {
      s.connect(new InetSocketAddress("127.0.0.1", server.port()), 10_000);
      s.setSoTimeout(60_000);
      try {
        s.getOutputStream().write(c.bytes());
        s.getOutputStream().flush();
        s.shutdownOutput();
      } catch (IOException e) {
        // the server answered and closed before taking everything: read what it said
      }
      ByteArrayOutputStream in = new ByteArrayOutputStream();
      try {
        s.getInputStream().transferTo(in);
      } catch (SocketTimeoutException e) {
        return describe(c, "no answer and no close within 60 s; got: " + in);
      } catch (IOException e) {
        // reset after (or instead of) the answer: judged on what arrived
      }
      got = in.toByteArray();
    } catch (IOException e) {
      return describe(c, "could not connect: " + e);
    }
    String text = new String(got, StandardCharsets.ISO_8859_1);
    if (got.length == 0) {
      if (c.framingError()) {
        silentFramingErrors.incrementAndGet();
        return null;
      }
      return describe(c, "connection closed without a response");
    }
    if (!text.startsWith("HTTP/1.")) {
      return describe(c, "not an HTTP response: " + abbreviate(text));
    }
    Matcher m = ANY_STATUS.matcher(text);
    int responses = 0;
    while (m.find()) {
      responses++;
      if (m.group(1).charAt(0) == '5') {
        return describe(c, "5xx: " + abbreviate(text));
      }
    }
    if (responses == 0) {
      return describe(c, "no status line: " + abbreviate(text));
    }
    if (text.contains("\"object\":\"text_completion\"")) {
      completions.incrementAndGet();
    }
    return null;
  }

  private static final Pattern ANY_STATUS = Pattern.compile("(?:^|\r\n)HTTP/1\\.[01] (\\d{3}) ");

  private static String describe(HttpMutator.Case c, String problem) {
    return "case "
        + c.index()
        + " ("
        + c.mutations()
        + (c.framingError() ? ", framing error" : "")
        + "): "
        + problem
        + "\n--- request ---\n"
        + abbreviate(c.text());
  }

  private static String abbreviate(String s) {
    return s.length() > 600 ? s.substring(0, 600) + "...(" + s.length() + " chars)" : s;
  }
}
