package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;
import static org.awaitility.Awaitility.await;

import com.fasterxml.jackson.databind.JsonNode;
import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.core.JsonValue;
import com.openai.core.http.StreamResponse;
import com.openai.models.chat.completions.ChatCompletionStreamOptions;
import com.openai.models.completions.Completion;
import com.openai.models.completions.CompletionChoice;
import com.openai.models.completions.CompletionCreateParams;
import com.openai.models.completions.CompletionUsage;
import io.gpumeter.billing.ChargeCost;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Issue 12 item 4 through the official OpenAI Java client against a live server (real demo model,
 * real PostgreSQL, a price and credit): prompt lists of strings, token ids and token-id arrays with
 * {@code n} choices each, streamed and not; {@code echo} with {@code logprobs}; {@code stop} with
 * {@code n > 1}; bad prompts over raw HTTP. A multi-prompt request is one stored charge, equal to
 * its receipt. The server runs {@value #SLOTS} sequences at a time, so several of these requests
 * have more choices than slots: the rest wait in the scheduler and run as slots free. {@code echo}
 * is also streamed.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
class PromptListsOpenAiTest {
  private static final String MODEL = "demo-byte-lm";
  private static final long PRICE = 3_333_337;
  private static final long CREDIT_MICROS = 10_000_000_000L;
  private static final int SLOTS = 4;

  /** The measured time of every step the server ran. */
  private static final AtomicLong measured = new AtomicLong();

  private static GpumeterServer server;
  private static Database db;
  private static Client http;
  private static CreatedApiKey key;
  private static OpenAIClient openai;

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            TestServers.config("prompt-lists")
                .set("scheduler.max_running", Integer.toString(SLOTS))
                .build(),
            step -> measured.addAndGet(step.measuredNs()));
    db = Database.start(server.config().toolDatabaseConfig());
    http = new Client(server.port());
    key = server.billing().apiKeys().create("prompts");
    openai =
        OpenAIOkHttpClient.builder()
            .baseUrl("http://127.0.0.1:" + server.port() + "/v1")
            .apiKey(key.plaintext())
            .maxRetries(0)
            .timeout(Duration.ofSeconds(120))
            .build();
    // a price for the device the model runs on, and credit to pay it: receipts carry a cost
    Reply probe =
        http.post(
            "/v1/completions",
            key.plaintext(),
            "{\"model\":\"demo-byte-lm\",\"prompt\":\"x\",\"max_tokens\":1}");
    assertThat(probe.status()).as(probe.toString()).isEqualTo(200);
    String device = probe.json().at("/usage/device").asText();
    String deviceName = probe.json().at("/usage/device_name").asText();
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
    var accounting = server.billing().accounting();
    accounting.setPrice("*", cls, "USD", PRICE, Instant.now().minusSeconds(3_600), null);
    accounting.grantCredit("prompts", "topup", CREDIT_MICROS, null, "prompt lists test");
    Instant now = Instant.now();
    UsageRecord priced =
        new UsageRecord(
            "probe",
            key.keyId(),
            key.accountId(),
            MODEL,
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
    await()
        .atMost(Duration.ofSeconds(60))
        .until(() -> server.billing().receiptCost(priced, "USD").isPresent());
  }

  @AfterAll
  static void stop() {
    if (openai != null) {
      openai.close();
    }
    if (db != null) {
      db.close();
    }
    if (server != null) {
      server.close();
    }
  }

  private static CompletionCreateParams.Builder params(
      CompletionCreateParams.Prompt prompt, long maxTokens) {
    return CompletionCreateParams.builder().model(MODEL).prompt(prompt).maxTokens(maxTokens);
  }

  private static List<Long> bytes(String s) {
    List<Long> out = new ArrayList<>();
    for (byte b : s.getBytes(StandardCharsets.UTF_8)) {
      out.add((long) (b & 0xff)); // the demo model's tokens are bytes
    }
    return out;
  }

  private static List<String> texts(Completion c) {
    List<String> out = new ArrayList<>();
    for (int i = 0; i < c.choices().size(); i++) {
      CompletionChoice ch = c.choices().get(i);
      assertThat(ch.index()).as("choices in index order").isEqualTo(i);
      out.add(ch.text());
    }
    return out;
  }

  private static String greedyAlone(String prompt, long maxTokens) {
    return openai
        .completions()
        .create(
            params(CompletionCreateParams.Prompt.ofString(prompt), maxTokens)
                .temperature(0)
                .build())
        .choices()
        .get(0)
        .text();
  }

  @Test
  void aListOfPromptsGetsItsChoicesInOrderAndIsOneChargeEqualToItsReceipt() throws Exception {
    List<String> prompts = List.of("Once upon a time", "The cat", "Hello, ");
    List<String> alone = new ArrayList<>();
    long promptTokens = 0;
    for (String p : prompts) {
      alone.add(greedyAlone(p, 8));
      promptTokens += p.getBytes(StandardCharsets.UTF_8).length;
    }
    Completion c =
        openai
            .completions()
            .create(
                params(CompletionCreateParams.Prompt.ofArrayOfStrings(prompts), 8)
                    .temperature(0)
                    .n(2)
                    .build());
    List<String> texts = texts(c);
    assertThat(texts).hasSize(6);
    for (int i = 0; i < 6; i++) {
      assertThat(texts.get(i))
          .as("choice %d = prompt %d's choice %d", i, i / 2, i % 2)
          .isEqualTo(alone.get(i / 2));
    }
    CompletionUsage u = c.usage().orElseThrow();
    assertThat(u.promptTokens()).as("summed over the prompts").isEqualTo(promptTokens);
    assertThat(u.completionTokens()).isEqualTo(6 * 8);
    assertOneChargeEqualToItsReceipt(c.id(), u);
  }

  @Test
  void tokenIdPromptsAndListsOfThemAnswerAsTheirText() throws Exception {
    Completion one =
        openai
            .completions()
            .create(
                params(CompletionCreateParams.Prompt.ofArrayOfTokens(bytes("The cat")), 6)
                    .temperature(0)
                    .build());
    assertThat(texts(one)).containsExactly(greedyAlone("The cat", 6));

    Completion many =
        openai
            .completions()
            .create(
                params(
                        CompletionCreateParams.Prompt.ofArrayOfTokenArrays(
                            List.of(bytes("Once upon a time"), bytes("Hi"))),
                        6)
                    .temperature(0)
                    .build());
    assertThat(texts(many))
        .containsExactly(greedyAlone("Once upon a time", 6), greedyAlone("Hi", 6));
    CompletionUsage u = many.usage().orElseThrow();
    assertThat(u.promptTokens()).isEqualTo("Once upon a time".length() + 2);
    assertOneChargeEqualToItsReceipt(many.id(), u);
  }

  @Test
  void aStreamedPromptListSendsEachChoiceByItsIndexWithTheUsageOfAll() throws Exception {
    List<String> prompts = List.of("Once upon a time", "The cat");
    CompletionCreateParams.Builder b =
        params(CompletionCreateParams.Prompt.ofArrayOfStrings(prompts), 10).temperature(0).n(2);
    List<String> whole = texts(openai.completions().create(b.build()));
    CompletionCreateParams p =
        b.streamOptions(ChatCompletionStreamOptions.builder().includeUsage(true).build()).build();
    Map<Long, StringBuilder> streamed = new TreeMap<>();
    List<CompletionUsage> usage = new ArrayList<>();
    String id;
    try (StreamResponse<Completion> s = openai.completions().createStreaming(p)) {
      List<Completion> chunks = s.stream().toList();
      id = chunks.get(0).id();
      for (Completion c : chunks) {
        for (CompletionChoice ch : c.choices()) {
          streamed.computeIfAbsent(ch.index(), k -> new StringBuilder()).append(ch.text());
        }
        c.usage().ifPresent(usage::add);
      }
    }
    assertThat(streamed.keySet()).containsExactly(0L, 1L, 2L, 3L);
    assertThat(streamed.values().stream().map(StringBuilder::toString).toList()).isEqualTo(whole);
    assertThat(usage).hasSize(1);
    assertThat(usage.get(0).promptTokens()).isEqualTo("Once upon a time".length() + 7);
    assertOneChargeEqualToItsReceipt(id, usage.get(0));
  }

  @Test
  void echoWithLogprobsGivesThePromptsTokensFirstTheFirstWithoutALogprob() {
    String prompt = "Once upon a time";
    // the greedy next token after the prompt, and its logprob as a generated token
    CompletionChoice.Logprobs next =
        openai
            .completions()
            .create(
                params(CompletionCreateParams.Prompt.ofString(prompt), 1)
                    .temperature(0)
                    .logprobs(2)
                    .build())
            .choices()
            .get(0)
            .logprobs()
            .orElseThrow();
    String nextToken = next.tokens().orElseThrow().get(0);
    double nextLogprob = next.tokenLogprobs().orElseThrow().get(0);

    String echoedPrompt = prompt + nextToken;
    Completion c =
        openai
            .completions()
            .create(
                params(
                        CompletionCreateParams.Prompt.ofArrayOfStrings(List.of(echoedPrompt, "Hi")),
                        3)
                    .temperature(0)
                    .echo(true)
                    .logprobs(2)
                    .n(2)
                    .build());
    assertThat(c.choices()).hasSize(4);
    for (CompletionChoice ch : c.choices()) {
      String p = ch.index() < 2 ? echoedPrompt : "Hi";
      String text = ch.text();
      assertThat(text).startsWith(p);
      CompletionChoice.Logprobs lp = ch.logprobs().orElseThrow();
      List<String> tokens = lp.tokens().orElseThrow();
      List<Double> logprobs = lp.tokenLogprobs().orElseThrow();
      List<Long> offsets = lp.textOffset().orElseThrow();
      assertThat(tokens).hasSize(p.length() + 3);
      assertThat(String.join("", tokens.subList(0, p.length()))).isEqualTo(p);
      assertThat(logprobs).hasSameSizeAs(tokens);
      assertThat(logprobs.get(0)).as("the first prompt token has no logprob").isNull();
      assertThat(lp.topLogprobs().orElseThrow().get(0)).isNull();
      for (int i = 0; i < tokens.size(); i++) {
        assertThat(offsets.get(i)).as("ASCII: a token per character").isEqualTo(i);
        assertThat(text.substring(i)).startsWith(tokens.get(i));
        if (i > 0) {
          assertThat(logprobs.get(i)).isLessThanOrEqualTo(0.0);
        }
      }
      if (ch.index() < 2) {
        assertThat(logprobs.get(prompt.length()))
            .as("an echoed token's logprob is the one it had when generated")
            .isCloseTo(nextLogprob, within(1e-4));
      }
    }
    assertThat(c.usage().orElseThrow().promptTokens()).isEqualTo(echoedPrompt.length() + 2);
  }

  @Test
  void stopWithSeveralChoicesEndsEachOnItsOwnAndNeverReturnsTheStopString() throws Exception {
    List<String> prompts = List.of("Once upon a time", "The cat sat");
    List<String> stops = List.of("e ", "th");
    CompletionCreateParams.Builder base =
        params(CompletionCreateParams.Prompt.ofArrayOfStrings(prompts), 40)
            .temperature(1.0)
            .seed(42)
            .n(3);
    List<String> uncut = texts(openai.completions().create(base.build()));
    Completion c =
        openai
            .completions()
            .create(base.stop(CompletionCreateParams.Stop.ofStrings(stops)).build());
    int stopped = 0;
    for (CompletionChoice ch : c.choices()) {
      String full = uncut.get((int) ch.index());
      int at = -1;
      for (String s : stops) {
        int i = full.indexOf(s);
        if (i >= 0 && (at < 0 || i < at)) {
          at = i;
        }
      }
      String expected = at < 0 ? full : full.substring(0, at);
      assertThat(ch.text()).as("choice %d", ch.index()).isEqualTo(expected);
      assertThat(ch.finishReason().toString()).isEqualTo(at < 0 ? "length" : "stop");
      for (String s : stops) {
        assertThat(ch.text()).doesNotContain(s);
      }
      stopped += at < 0 ? 0 : 1;
    }
    assertThat(stopped).as("some choices met a stop string").isPositive();

    Map<Long, StringBuilder> streamed = new TreeMap<>();
    try (StreamResponse<Completion> s =
        openai
            .completions()
            .createStreaming(base.stop(CompletionCreateParams.Stop.ofStrings(stops)).build())) {
      s.stream()
          .flatMap(x -> x.choices().stream())
          .forEach(
              ch ->
                  streamed.computeIfAbsent(ch.index(), k -> new StringBuilder()).append(ch.text()));
    }
    assertThat(streamed.values().stream().map(StringBuilder::toString).toList())
        .isEqualTo(texts(c));
    CompletionUsage u = c.usage().orElseThrow();
    assertThat(storedTokens(c.id())[1])
        .as("no token generated past a stop string is stored")
        .isEqualTo(u.completionTokens());
  }

  /** End-of-sequence banned: every choice runs to max_tokens. */
  private static CompletionCreateParams.LogitBias noEos() {
    return CompletionCreateParams.LogitBias.builder()
        .putAdditionalProperty("256", JsonValue.from(-100))
        .build();
  }

  @Test
  void twiceMaxRunningSequencesQueueTheRestAndAreOneChargeOfEveryStep() throws Exception {
    List<String> prompts = IntStream.range(0, SLOTS).mapToObj(i -> "Prompt " + i + ":").toList();
    String last = prompts.get(SLOTS - 1);
    String lastAlone =
        openai
            .completions()
            .create(
                params(CompletionCreateParams.Prompt.ofString(last), 5)
                    .temperature(0)
                    .logitBias(noEos())
                    .build())
            .choices()
            .get(0)
            .text();
    long measuredBefore = measured.get();
    long storedBefore = storedDeviceNs();

    // SLOTS prompts × n = 2: twice the sequences the model runs at once
    Completion c =
        openai
            .completions()
            .create(
                params(CompletionCreateParams.Prompt.ofArrayOfStrings(prompts), 5)
                    .temperature(0)
                    .n(2)
                    .logitBias(noEos())
                    .build());
    List<String> texts = texts(c);
    assertThat(texts).hasSize(2 * SLOTS);
    for (int p = 0; p < SLOTS; p++) {
      assertThat(texts.get(2 * p + 1))
          .as("prompt %d's greedy choices agree", p)
          .isEqualTo(texts.get(2 * p));
    }
    assertThat(texts.get(2 * SLOTS - 1)).as("the last, queued prompt").isEqualTo(lastAlone);
    CompletionUsage u = c.usage().orElseThrow();
    assertThat(u.completionTokens()).isEqualTo(2L * SLOTS * 5);
    assertOneChargeEqualToItsReceipt(c.id(), u);
    long deviceNs = u._additionalProperties().get("device_time_ns").convert(Long.class);
    assertThat(measured.get() - measuredBefore)
        .as("conservation: every step run meanwhile is on the one record")
        .isEqualTo(deviceNs);
    assertThat(storedDeviceNs() - storedBefore).isEqualTo(deviceNs);
  }

  @Test
  void echoIsStreamedPromptFirstWithTheWholeAnswersTextAndLogprobs() throws Exception {
    List<String> prompts = List.of("Once upon a time", "Hi");
    for (boolean withLogprobs : new boolean[] {false, true}) {
      CompletionCreateParams.Builder b =
          params(CompletionCreateParams.Prompt.ofArrayOfStrings(prompts), 6)
              .temperature(0)
              .echo(true)
              .n(2);
      if (withLogprobs) {
        b.logprobs(2);
      }
      Completion whole = openai.completions().create(b.build());
      CompletionCreateParams p =
          b.streamOptions(ChatCompletionStreamOptions.builder().includeUsage(true).build()).build();
      Map<Long, String> first = new TreeMap<>();
      Map<Long, StringBuilder> text = new TreeMap<>();
      Map<Long, List<String>> tokens = new TreeMap<>();
      Map<Long, List<Double>> logprobs = new TreeMap<>();
      Map<Long, List<Long>> offsets = new TreeMap<>();
      List<CompletionUsage> usage = new ArrayList<>();
      String id;
      try (StreamResponse<Completion> s = openai.completions().createStreaming(p)) {
        List<Completion> chunks = s.stream().toList();
        id = chunks.get(0).id();
        for (Completion chunk : chunks) {
          for (CompletionChoice ch : chunk.choices()) {
            first.putIfAbsent(ch.index(), ch.text());
            text.computeIfAbsent(ch.index(), k -> new StringBuilder()).append(ch.text());
            ch.logprobs()
                .ifPresent(
                    lp -> {
                      tokens
                          .computeIfAbsent(ch.index(), k -> new ArrayList<>())
                          .addAll(lp.tokens().orElseThrow());
                      logprobs
                          .computeIfAbsent(ch.index(), k -> new ArrayList<>())
                          .addAll(lp.tokenLogprobs().orElseThrow());
                      offsets
                          .computeIfAbsent(ch.index(), k -> new ArrayList<>())
                          .addAll(lp.textOffset().orElseThrow());
                    });
          }
          chunk.usage().ifPresent(usage::add);
        }
      }
      assertThat(text.keySet()).containsExactly(0L, 1L, 2L, 3L);
      for (CompletionChoice ch : whole.choices()) {
        long i = ch.index();
        String prompt = prompts.get((int) i / 2);
        assertThat(first.get(i))
            .as("choice %d's stream starts with its prompt (logprobs %s)", i, withLogprobs)
            .startsWith(prompt);
        assertThat(text.get(i).toString()).as("choice %d", i).isEqualTo(ch.text());
        if (withLogprobs) {
          CompletionChoice.Logprobs lp = ch.logprobs().orElseThrow();
          assertThat(tokens.get(i)).isEqualTo(lp.tokens().orElseThrow());
          assertThat(offsets.get(i)).isEqualTo(lp.textOffset().orElseThrow());
          List<Double> want = lp.tokenLogprobs().orElseThrow();
          List<Double> got = logprobs.get(i);
          assertThat(got).hasSameSizeAs(want);
          assertThat(got.get(0)).as("the first prompt token is unscored").isNull();
          for (int t = 1; t < want.size(); t++) {
            assertThat(got.get(t))
                .as("token %d of choice %d", t, i)
                .isCloseTo(want.get(t), within(1e-4));
          }
        } else {
          assertThat(tokens).isEmpty();
        }
      }
      assertThat(usage).hasSize(1);
      assertOneChargeEqualToItsReceipt(id, usage.get(0));
    }
  }

  @Test
  void badEchoValuesWithStreamAre400sNamingEchoAndChangeNothing() throws Exception {
    long before = storedCount();
    for (String echo : List.of("\"yes\"", "1", "[true]", "{}")) {
      Reply r =
          http.post(
              "/v1/completions",
              key.plaintext(),
              "{\"model\":\"demo-byte-lm\",\"prompt\":\"x\",\"max_tokens\":2,\"stream\":true,"
                  + "\"echo\":"
                  + echo
                  + "}");
      assertThat(r.status()).as(echo + " -> " + r).isEqualTo(400);
      assertThat(r.json().at("/error/param").asText()).as(echo).isEqualTo("echo");
      assertThat(r.json().at("/error/type").asText()).isEqualTo("invalid_request_error");
    }
    assertThat(storedCount()).as("nothing was charged").isEqualTo(before);
  }

  private static long storedDeviceNs() throws Exception {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT coalesce(sum(device_ns), 0) FROM usage_records")) {
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }

  @Test
  void badPromptsAre400sNamingPromptAndChangeNothing() throws Exception {
    long before = storedCount();
    int slots = server.schedulers().get(0).config().maxRunning();
    List<String> bad =
        List.of(
            "[]",
            "[[]]",
            "[[1], []]",
            "[\"a\", 1]",
            "[1, \"a\"]",
            "[[1], 2]",
            "[[1], \"a\"]",
            "[[[1]]]",
            "[\"a\", [1]]",
            "[null]",
            "[1.5]",
            "[257]",
            "[[1, 2], [-1]]",
            "[99999999999]",
            "{\"a\": 1}",
            "true");
    for (String prompt : bad) {
      Reply r =
          http.post(
              "/v1/completions",
              key.plaintext(),
              "{\"model\":\"demo-byte-lm\",\"prompt\":" + prompt + ",\"max_tokens\":2}");
      assertThat(r.status()).as(prompt + " -> " + r).isEqualTo(400);
      JsonNode e = r.json().get("error");
      assertThat(e.get("param").asText()).as(prompt).isEqualTo("prompt");
      assertThat(e.get("type").asText()).isEqualTo("invalid_request_error");
      assertThat(e.get("message").asText()).isNotBlank();
      assertThat(e.has("code")).isTrue();
    }
    // more sequences than one request may have (more than the slots is served: queued)
    String many =
        String.join(
            ",", java.util.Collections.nCopies(PromptList.MAX_SEQUENCES / slots + 1, "\"a\""));
    Reply tooMany =
        http.post(
            "/v1/completions",
            key.plaintext(),
            "{\"model\":\"demo-byte-lm\",\"prompt\":["
                + many
                + "],\"max_tokens\":2,\"n\":"
                + slots
                + "}");
    assertThat(tooMany.status()).as(tooMany.toString()).isEqualTo(400);
    assertThat(tooMany.json().at("/error/param").asText()).isEqualTo("prompt");
    assertThat(tooMany.json().at("/error/message").asText())
        .contains("at most " + PromptList.MAX_SEQUENCES);
    assertThat(storedCount()).as("nothing was charged").isEqualTo(before);

    Reply ok =
        http.post(
            "/v1/completions",
            key.plaintext(),
            "{\"model\":\"demo-byte-lm\",\"prompt\":[\"\", \"a\"],\"max_tokens\":2}");
    assertThat(ok.status()).as("an empty string is the start of a document").isEqualTo(200);
    assertThat(ok.json().at("/usage/prompt_tokens").asInt()).isEqualTo(2);
  }

  @Test
  void theBudgetEstimateCountsEveryPrompt() throws Exception {
    server.billing().accounting().createAccount("broke", "USD", false);
    CreatedApiKey broke = server.billing().apiKeys().create("broke");
    // refused for want of funds, each refusal states its estimate: tokens × the same ns per token
    // (no step runs in between, so the per-token estimate stays as it is)
    long one = refusedEstimate(broke, "\"abcd\"", 1); // 4 + 5 tokens
    long three = refusedEstimate(broke, "[\"abcd\", \"ab\", \"abc\"]", 2); // (9+7+8) × 2
    assertThat(one).isPositive();
    assertThat(three * 9).isEqualTo(one * 48);
  }

  private static long refusedEstimate(CreatedApiKey k, String prompt, int n) throws Exception {
    Reply r =
        http.post(
            "/v1/completions",
            k.plaintext(),
            "{\"model\":\"demo-byte-lm\",\"prompt\":"
                + prompt
                + ",\"max_tokens\":5,\"n\":"
                + n
                + "}");
    assertThat(r.status()).as(r.toString()).isEqualTo(429);
    java.util.regex.Matcher m =
        java.util.regex.Pattern.compile("estimated (\\d+) ns")
            .matcher(r.json().at("/error/message").asText());
    assertThat(m.find()).as(r.toString()).isTrue();
    return Long.parseLong(m.group(1));
  }

  private static void assertOneChargeEqualToItsReceipt(String id, CompletionUsage u)
      throws Exception {
    Map<String, JsonValue> extra = u._additionalProperties();
    long deviceNs = extra.get("device_time_ns").convert(Long.class);
    long[] stored = storedTokens(id);
    assertThat(stored[0]).as("prompt tokens stored").isEqualTo(u.promptTokens());
    assertThat(stored[1]).as("completion tokens stored").isEqualTo(u.completionTokens());
    assertThat(stored[2]).as("device time stored = the receipt's").isEqualTo(deviceNs);
    ChargeCost cost =
        await("the priced charge of " + id)
            .atMost(Duration.ofSeconds(60))
            .until(() -> server.billing().chargeCost(id), java.util.Optional::isPresent)
            .orElseThrow();
    assertThat(extra.get("cost").convert(Long.class))
        .as("the receipt's cost = the stored charge's")
        .isEqualTo(cost.roundedMicros());
  }

  /** {prompt_tokens, completion_tokens, device_ns} of the request's one stored record. */
  private static long[] storedTokens(String id) throws Exception {
    return await("the charge of " + id)
        .atMost(Duration.ofSeconds(60))
        .until(() -> row(id), java.util.Objects::nonNull);
  }

  private static long[] row(String id) throws Exception {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT prompt_tokens, completion_tokens, device_ns FROM usage_records"
                    + " WHERE request_id = ?")) {
      ps.setString(1, id);
      try (ResultSet rs = ps.executeQuery()) {
        if (!rs.next()) {
          return null;
        }
        long[] r = {rs.getLong(1), rs.getLong(2), rs.getLong(3)};
        assertThat(rs.next()).as("one record per request").isFalse();
        return r;
      }
    }
  }

  private static long storedCount() throws Exception {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT count(*) FROM usage_records WHERE api_key_id = ?")) {
      ps.setLong(1, key.keyId());
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }
}
