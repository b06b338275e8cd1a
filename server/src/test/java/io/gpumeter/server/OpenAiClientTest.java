package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import com.fasterxml.jackson.databind.JsonNode;
import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.core.JsonValue;
import com.openai.core.http.StreamResponse;
import com.openai.errors.BadRequestException;
import com.openai.errors.NotFoundException;
import com.openai.models.chat.completions.ChatCompletion;
import com.openai.models.chat.completions.ChatCompletionChunk;
import com.openai.models.chat.completions.ChatCompletionContentPart;
import com.openai.models.chat.completions.ChatCompletionContentPartText;
import com.openai.models.chat.completions.ChatCompletionCreateParams;
import com.openai.models.chat.completions.ChatCompletionStreamOptions;
import com.openai.models.completions.Completion;
import com.openai.models.completions.CompletionCreateParams;
import com.openai.models.completions.CompletionUsage;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The OpenAI surface as the official Java client ({@code com.openai:openai-java}) sees it, against
 * a live server: chat, streaming with usage on both endpoints, stop strings, errors; plus the SSE
 * wire format, a disconnect and a slow reader mid-stream (raw sockets), each checked against the
 * charge stored in PostgreSQL.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
class OpenAiClientTest {
  private static final String MODEL = "demo-byte-lm";
  private static final Duration WAIT = Duration.ofSeconds(60);

  private static GpumeterServer server;
  private static Database db;
  private static Client http;
  private static CreatedApiKey key;
  private static OpenAIClient openai;

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            TestServers.config("openai")
                // small kernel and server buffers, so a reader that stops reading fills them
                .set("completions.stream_buffer_bytes", "4k")
                .set("http.socket_send_buffer", "4k")
                .build(),
            report -> {});
    db = Database.start(server.config().toolDatabaseConfig());
    http = new Client(server.port());
    key = server.billing().apiKeys().create("openai-client");
    openai =
        OpenAIOkHttpClient.builder()
            .apiKey(key.plaintext())
            .baseUrl("http://127.0.0.1:" + server.port() + "/v1")
            .maxRetries(0)
            .timeout(Duration.ofSeconds(120))
            .build();
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

  // ------------------------------------------------------------------ chat

  @Test
  void chatRendersTheModelsTemplateAndIsChargedAsStored() throws Exception {
    ChatCompletion c =
        openai
            .chat()
            .completions()
            .create(
                ChatCompletionCreateParams.builder()
                    .model(MODEL)
                    .addSystemMessage("You write Python docs.")
                    .addUserMessage("What is a list?")
                    .addAssistantMessage("A list is a sequence.")
                    .addUserMessage("And a tuple?")
                    .maxCompletionTokens(24)
                    .temperature(0)
                    .build());
    assertThat(c.id()).startsWith("chatcmpl-");
    assertThat(c.choices()).hasSize(1);
    ChatCompletion.Choice choice = c.choices().get(0);
    assertThat(choice.finishReason().toString()).isIn("stop", "length");
    String text = choice.message().content().orElseThrow();
    CompletionUsage u = c.usage().orElseThrow();
    assertThat(u.completionTokens()).isBetween(1L, 24L);
    assertThat(deviceNs(u)).isPositive().isEqualTo(storedDeviceNs(c.id()));

    // The template of models/demo-byte-lm/tokenizer_config.json, applied: the same prompt as a
    // completion gives the same greedy text.
    String prompt =
        "System: You write Python docs.\nUser: What is a list?\nAssistant: A list is a"
            + " sequence.\nUser: And a tuple?\nAssistant:";
    Completion same =
        openai
            .completions()
            .create(
                CompletionCreateParams.builder()
                    .model(MODEL)
                    .prompt(prompt)
                    .maxTokens(24)
                    .temperature(0)
                    .build());
    assertThat(text).isEqualTo(same.choices().get(0).text());
    assertThat(u.promptTokens()).isEqualTo(same.usage().orElseThrow().promptTokens());
  }

  @Test
  void contentAsTextPartsIsTheSameAsAString() {
    ChatCompletionCreateParams.Builder base =
        ChatCompletionCreateParams.builder().model(MODEL).maxTokens(12).temperature(0);
    String asString =
        openai
            .chat()
            .completions()
            .create(base.addUserMessage("Modules and packages").build())
            .choices()
            .get(0)
            .message()
            .content()
            .orElseThrow();
    String asParts =
        openai
            .chat()
            .completions()
            .create(
                ChatCompletionCreateParams.builder()
                    .model(MODEL)
                    .maxTokens(12)
                    .temperature(0)
                    .addUserMessageOfArrayOfContentParts(
                        List.of(
                            ChatCompletionContentPart.ofText(
                                ChatCompletionContentPartText.builder().text("Modules ").build()),
                            ChatCompletionContentPart.ofText(
                                ChatCompletionContentPartText.builder()
                                    .text("and packages")
                                    .build())))
                    .build())
            .choices()
            .get(0)
            .message()
            .content()
            .orElseThrow();
    assertThat(asParts).isEqualTo(asString);
  }

  // ------------------------------------------------------------------ streaming

  @Test
  void streamedCompletionEqualsTheWholeOneAndItsUsageIsTheStoredCharge() throws Exception {
    CompletionCreateParams.Builder p =
        CompletionCreateParams.builder()
            .model(MODEL)
            .prompt("The Python tutorial ")
            .maxTokens(40)
            .temperature(0);
    String whole = openai.completions().create(p.build()).choices().get(0).text();
    List<Completion> chunks;
    try (StreamResponse<Completion> s =
        openai
            .completions()
            .createStreaming(
                p.streamOptions(ChatCompletionStreamOptions.builder().includeUsage(true).build())
                    .build())) {
      chunks = s.stream().collect(Collectors.toList());
    }
    assertThat(chunks.size()).as("one chunk per token, then usage").isGreaterThan(10);
    StringBuilder text = new StringBuilder();
    String finish = null;
    for (Completion c : chunks) {
      for (var choice : c.choices()) {
        text.append(choice.text());
        if (choice._finishReason().asKnown().isPresent()) {
          finish = choice._finishReason().asKnown().get().toString();
        }
      }
    }
    assertThat(text.toString()).isEqualTo(whole);
    assertThat(finish).isIn("stop", "length");
    Completion last = chunks.get(chunks.size() - 1);
    assertThat(last.choices()).isEmpty();
    CompletionUsage u = last.usage().orElseThrow();
    assertThat(deviceNs(u)).isPositive().isEqualTo(storedDeviceNs(last.id()));
    long prefill = u._additionalProperties().get("prefill_time_ns").convert(Long.class);
    long decode = u._additionalProperties().get("decode_time_ns").convert(Long.class);
    assertThat(prefill + decode).isEqualTo(deviceNs(u));
  }

  @Test
  void streamedChatStartsWithTheRoleAndCarriesUsage() throws Exception {
    ChatCompletionCreateParams.Builder p =
        ChatCompletionCreateParams.builder()
            .model(MODEL)
            .addUserMessage("Exceptions")
            .maxCompletionTokens(30)
            .temperature(0);
    String whole =
        openai.chat().completions().create(p.build()).choices().get(0).message().content().get();
    List<ChatCompletionChunk> chunks;
    try (StreamResponse<ChatCompletionChunk> s =
        openai
            .chat()
            .completions()
            .createStreaming(
                p.streamOptions(ChatCompletionStreamOptions.builder().includeUsage(true).build())
                    .build())) {
      chunks = s.stream().collect(Collectors.toList());
    }
    ChatCompletionChunk first = chunks.get(0);
    assertThat(first.choices().get(0).delta().role().orElseThrow().toString())
        .isEqualTo("assistant");
    StringBuilder text = new StringBuilder();
    for (ChatCompletionChunk c : chunks) {
      assertThat(c.id()).isEqualTo(first.id());
      for (var choice : c.choices()) {
        choice.delta().content().ifPresent(text::append);
      }
    }
    assertThat(text.toString()).isEqualTo(whole);
    ChatCompletionChunk last = chunks.get(chunks.size() - 1);
    assertThat(last.choices()).isEmpty();
    assertThat(deviceNs(last.usage().orElseThrow())).isEqualTo(storedDeviceNs(first.id()));
    assertThat(chunks.get(chunks.size() - 2).choices().get(0).finishReason()).isPresent();
  }

  /** The exact bytes: {@code data: {json}\n\n} events, {@code data: [DONE]\n\n} last. */
  @Test
  void theWireFormatIsServerSentEventsEndingWithDone() throws Exception {
    Reply r =
        http.post(
            "/v1/completions",
            key.plaintext(),
            "{\"model\":\"demo-byte-lm\",\"prompt\":\"Sets \",\"max_tokens\":8,\"temperature\":0,"
                + "\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    assertThat(r.header("content-type")).startsWith("text/event-stream");
    assertThat(r.header("x-request-id")).startsWith("cmpl-");
    assertThat(r.header("openai-processing-ms")).matches("[0-9]+");
    String body = r.raw().body();
    assertThat(body).endsWith("data: [DONE]\n\n");
    String[] events = body.split("\n\n", -1);
    assertThat(events[events.length - 1]).isEmpty();
    int texts = 0;
    for (int i = 0; i < events.length - 2; i++) {
      assertThat(events[i]).startsWith("data: {");
      JsonNode j = Json.MAPPER.readTree(events[i].substring("data: ".length()));
      assertThat(j.get("object").asText()).isEqualTo("text_completion");
      assertThat(j.get("id").asText()).isEqualTo(r.header("x-request-id"));
      if (j.get("choices").size() == 1) {
        texts++;
      } else {
        assertThat(i).as("the usage event is last").isEqualTo(events.length - 3);
        assertThat(j.get("usage").get("completion_tokens").asInt()).isEqualTo(8);
      }
    }
    // up to one event per token, then the one with finish_reason (its text may be empty)
    assertThat(texts).isBetween(2, 9);
    JsonNode finishing = Json.MAPPER.readTree(events[events.length - 4].substring(6));
    assertThat(finishing.get("choices").get(0).get("finish_reason").asText()).isEqualTo("length");
  }

  // ------------------------------------------------------------------ stop

  @Test
  void stopEndsTheGenerationAtTheStopStringAcrossTokensAndNeverReturnsIt() throws Exception {
    CompletionCreateParams.Builder p =
        CompletionCreateParams.builder()
            .model(MODEL)
            .prompt("The dictionary ")
            .maxTokens(48)
            .temperature(0);
    Completion plain = openai.completions().create(p.build());
    String full = plain.choices().get(0).text();
    assertThat(full.length()).as(full).isGreaterThan(20);
    // Three bytes = three tokens of the byte tokenizer: the stop string spans token boundaries.
    String stop = full.substring(12, 15);
    int at = full.indexOf(stop);
    Completion stopped =
        openai.completions().create(p.stopOfStrings(List.of("\u0000", stop)).build());
    assertThat(stopped.choices().get(0).text()).isEqualTo(full.substring(0, at));
    assertThat(stopped.choices().get(0).finishReason().toString()).isEqualTo("stop");
    // No token was generated past the stop string, and that is what is stored.
    long expectedTokens =
        full.substring(0, at + stop.length()).getBytes(StandardCharsets.UTF_8).length;
    assertThat(stopped.usage().orElseThrow().completionTokens()).isEqualTo(expectedTokens);
    assertThat(storedCompletionTokens(stopped.id())).isEqualTo(expectedTokens);

    // Streamed, the same text: the held-back tail that could start the stop string never leaks.
    StringBuilder streamed = new StringBuilder();
    try (StreamResponse<Completion> s = openai.completions().createStreaming(p.build())) {
      s.stream().forEach(c -> c.choices().forEach(ch -> streamed.append(ch.text())));
    }
    assertThat(streamed.toString()).isEqualTo(full.substring(0, at));

    // Chat takes stop too.
    ChatCompletion chat =
        openai
            .chat()
            .completions()
            .create(
                ChatCompletionCreateParams.builder()
                    .model(MODEL)
                    .addUserMessage("Tuples")
                    .maxTokens(40)
                    .temperature(0)
                    .stop(" ")
                    .build());
    assertThat(chat.choices().get(0).message().content().orElseThrow()).doesNotContain(" ");
  }

  // ------------------------------------------------------------------ disconnects

  @Test
  void aClientThatResetsMidStreamIsCancelledAtTheNextStepAndChargedForItsSteps() throws Exception {
    String id;
    long stepsBefore = server.schedulers().get(0).stats().steps();
    try (Socket s = new Socket("127.0.0.1", server.port())) {
      send(
          s,
          "{\"model\":\"demo-byte-lm\",\"prompt\":\"The \",\"max_tokens\":1000,"
              + "\"temperature\":0,\"stream\":true}");
      BufferedReader in =
          new BufferedReader(new InputStreamReader(s.getInputStream(), StandardCharsets.UTF_8));
      id = readHeadAndEvents(in, 5);
      s.setSoLinger(true, 0); // a reset: the server sees it
    }
    Object[] row = awaitRow(id);
    assertThat(row[0]).isEqualTo("cancelled");
    assertThat((Long) row[1]).isPositive();
    assertThat((Integer) row[2]).isBetween(5, 999);
    assertThat(server.schedulers().get(0).stats().steps() - stepsBefore)
        .as("the sequence stopped long before its 1000 tokens")
        .isLessThan(1000);
    assertNoVoid(id);
    assertConservation();
  }

  @Test
  void aReaderTooSlowForTheStreamBufferIsCutOffAndChargedForWhatRan() throws Exception {
    String id;
    try (Socket s = new Socket()) {
      s.setReceiveBufferSize(1024);
      s.connect(new InetSocketAddress("127.0.0.1", server.port()));
      send(
          s,
          "{\"model\":\"demo-byte-lm\",\"prompt\":\"A\",\"max_tokens\":1020,"
              + "\"temperature\":1,\"seed\":3,\"stream\":true}");
      BufferedReader in =
          new BufferedReader(new InputStreamReader(s.getInputStream(), StandardCharsets.UTF_8));
      id = readHeadAndEvents(in, 1);
      // Now read nothing: the server must not buffer the rest of the stream for us.
      Object[] row = awaitRow(id);
      assertThat(row[0]).isEqualTo("cancelled");
      assertThat((Integer) row[2]).isLessThan(1020);
      assertThat((Long) row[1]).isPositive();
    }
    assertNoVoid(id);
  }

  // ------------------------------------------------------------------ errors and headers

  @Test
  void badValuesGetA400NamingTheParameter() throws Exception {
    String chat = "\"model\":\"demo-byte-lm\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]";
    String cmpl = "\"model\":\"demo-byte-lm\",\"prompt\":\"x\"";
    Map<String, String> cases =
        Map.ofEntries(
            Map.entry("{" + cmpl + ",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop"),
            Map.entry("{" + cmpl + ",\"stop\":7}", "stop"),
            Map.entry("{" + cmpl + ",\"stop\":\"\"}", "stop"),
            Map.entry("{" + cmpl + ",\"stop\":[\"a\",1]}", "stop"),
            Map.entry("{" + cmpl + ",\"stream\":\"yes\"}", "stream"),
            Map.entry(
                "{" + cmpl + ",\"stream_options\":{\"include_usage\":true}}", "stream_options"),
            Map.entry(
                "{" + cmpl + ",\"stream\":true,\"stream_options\":{\"include_usage\":1}}",
                "stream_options.include_usage"),
            Map.entry(
                "{" + cmpl + ",\"stream\":true,\"stream_options\":{\"x\":true}}",
                "stream_options.x"),
            Map.entry("{" + cmpl + ",\"stream\":true,\"stream_options\":[]}", "stream_options"));
    for (var e : cases.entrySet()) {
      assertBadRequest("/v1/completions", e.getKey(), e.getValue());
      assertBadRequest("/v1/chat/completions", e.getKey().replace(cmpl, chat), e.getValue());
    }
    Map<String, String> chatCases =
        Map.ofEntries(
            Map.entry("{\"model\":\"demo-byte-lm\"}", "messages"),
            Map.entry("{\"model\":\"demo-byte-lm\",\"messages\":[]}", "messages"),
            Map.entry("{\"model\":\"demo-byte-lm\",\"messages\":\"hi\"}", "messages"),
            Map.entry("{\"model\":\"demo-byte-lm\",\"messages\":[1]}", "messages[0]"),
            Map.entry(
                "{\"model\":\"demo-byte-lm\",\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
                "messages[0].role"),
            Map.entry(
                "{\"model\":\"demo-byte-lm\",\"messages\":[{\"role\":\"user\"}]}",
                "messages[0].content"),
            Map.entry(
                "{\"model\":\"demo-byte-lm\",\"messages\":[{\"role\":\"user\",\"content\":5}]}",
                "messages[0].content"),
            Map.entry(
                "{\"model\":\"demo-byte-lm\",\"messages\":[{\"role\":\"user\",\"content\":"
                    + "[{\"type\":\"image_url\",\"image_url\":{}}]}]}",
                "messages[0].content[0].type"),
            Map.entry(
                "{\"model\":\"demo-byte-lm\",\"messages\":[{\"role\":\"user\",\"content\":\"x\","
                    + "\"tool_calls\":[]}]}",
                "messages[0].tool_calls"),
            Map.entry("{" + chat + ",\"max_tokens\":5,\"max_completion_tokens\":5}", "max_tokens"),
            Map.entry("{" + chat + ",\"max_completion_tokens\":0}", "max_completion_tokens"),
            Map.entry("{" + chat + ",\"max_completion_tokens\":1.5}", "max_completion_tokens"),
            Map.entry("{" + chat + ",\"temperature\":3}", "temperature"),
            Map.entry("{" + chat + ",\"n\":0}", "n"),
            Map.entry("{" + chat + ",\"functions\":[]}", "functions"));
    for (var e : chatCases.entrySet()) {
      assertBadRequest("/v1/chat/completions", e.getKey(), e.getValue());
    }
    // and through the official client
    assertThatThrownBy(
            () ->
                openai
                    .chat()
                    .completions()
                    .create(
                        ChatCompletionCreateParams.builder()
                            .model(MODEL)
                            .addUserMessage("x")
                            .stopOfStrings(List.of("a", "b", "c", "d", "e"))
                            .build()))
        .isInstanceOfSatisfying(
            BadRequestException.class, e -> assertThat(e.param()).hasValue("stop"));
    assertThatThrownBy(
            () ->
                openai
                    .chat()
                    .completions()
                    .create(
                        ChatCompletionCreateParams.builder()
                            .model("no-such-model")
                            .addUserMessage("x")
                            .build()))
        .isInstanceOfSatisfying(
            NotFoundException.class, e -> assertThat(e.code()).hasValue("model_not_found"));
    assertThatThrownBy(() -> openai.models().retrieve("no-such-model"))
        .isInstanceOf(NotFoundException.class);
    assertThat(openai.models().retrieve(MODEL).id()).isEqualTo(MODEL);
  }

  @Test
  void everyResponseCarriesARequestIdAndApiResponsesTheirProcessingTime() throws Exception {
    for (String path : List.of("/v1/models", "/v1/models/" + MODEL, "/v1/models/nope")) {
      Reply r = http.get(path, key.plaintext());
      assertThat(r.header("x-request-id")).as(path).isNotBlank();
      assertThat(r.header("openai-processing-ms")).as(path).matches("[0-9]+");
    }
    Reply nope = http.get("/v1/models/nope", key.plaintext());
    assertThat(nope.status()).isEqualTo(404);
    assertThat(nope.json().get("error").get("code").asText()).isNotBlank();
    for (String path : List.of("/healthz", "/readyz", "/metrics", "/nowhere")) {
      assertThat(http.get(path, null).header("x-request-id")).as(path).isNotBlank();
    }
    Reply unauthorized = http.get("/v1/models", null);
    assertThat(unauthorized.status()).isEqualTo(401);
    assertThat(unauthorized.header("x-request-id")).isNotBlank();
    Reply a = http.get("/healthz", null);
    Reply b = http.get("/healthz", null);
    assertThat(a.header("x-request-id")).isNotEqualTo(b.header("x-request-id"));
  }

  // ------------------------------------------------------------------ helpers

  private static void assertBadRequest(String path, String body, String param) throws Exception {
    Reply r = http.post(path, key.plaintext(), body);
    assertThat(r.status()).as(path + " " + body + " -> " + r).isEqualTo(400);
    JsonNode err = r.json().get("error");
    assertThat(err.get("param").asText()).as(body + " -> " + r).isEqualTo(param);
    assertThat(err.get("type").asText()).isEqualTo("invalid_request_error");
    assertThat(err.get("message").asText()).isNotBlank();
    assertThat(err.has("code")).isTrue();
  }

  private static void send(Socket s, String body) throws Exception {
    OutputStream out = s.getOutputStream();
    byte[] b = body.getBytes(StandardCharsets.UTF_8);
    out.write(
        ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + key.plaintext()
                + "\r\nContent-Type: application/json\r\nContent-Length: "
                + b.length
                + "\r\n\r\n")
            .getBytes(StandardCharsets.US_ASCII));
    out.write(b);
    out.flush();
  }

  /** Reads the response head and at least {@code events} events; returns the x-request-id. */
  private static String readHeadAndEvents(BufferedReader in, int events) throws Exception {
    String status = in.readLine();
    assertThat(status).isEqualTo("HTTP/1.1 200 OK");
    String id = null;
    String line;
    while (!(line = in.readLine()).isEmpty()) {
      if (line.toLowerCase(java.util.Locale.ROOT).startsWith("x-request-id:")) {
        id = line.substring(line.indexOf(':') + 1).trim();
      }
    }
    int seen = 0;
    while (seen < events && (line = in.readLine()) != null) {
      if (line.contains("data: {")) {
        seen++;
      }
    }
    assertThat(seen).isEqualTo(events);
    assertThat(id).startsWith("cmpl-");
    return id;
  }

  private static long deviceNs(CompletionUsage u) {
    JsonValue v = u._additionalProperties().get("device_time_ns");
    assertThat(v).as("usage carries device_time_ns").isNotNull();
    return v.convert(Long.class);
  }

  private static long storedDeviceNs(String id) throws Exception {
    return (Long) queryRow(id)[1];
  }

  private static long storedCompletionTokens(String id) throws Exception {
    return (Integer) queryRow(id)[2];
  }

  private static Object[] awaitRow(String id) {
    return await("the charge of " + id)
        .atMost(WAIT)
        .pollInterval(Duration.ofMillis(50))
        .until(() -> queryRow(id), java.util.Objects::nonNull);
  }

  /** {status, device_ns, completion_tokens} of the one stored record, or null. */
  private static Object[] queryRow(String id) throws Exception {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT status, device_ns, completion_tokens FROM usage_records"
                    + " WHERE request_id = ?")) {
      ps.setString(1, id);
      try (ResultSet rs = ps.executeQuery()) {
        if (!rs.next()) {
          return null;
        }
        Object[] r = {rs.getString(1), rs.getLong(2), rs.getInt(3)};
        assertThat(rs.next()).as("one row only").isFalse();
        return r;
      }
    }
  }

  private static void assertNoVoid(String id) throws Exception {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT count(*) FROM charge_voids WHERE request_id = ?")) {
      ps.setString(1, id);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        assertThat(rs.getLong(1)).as("a mid-generation disconnect stays charged").isZero();
      }
    }
  }

  /** Invariant 1 with the streamed and cancelled requests in it, once the scheduler is idle. */
  private static void assertConservation() throws Exception {
    await("the scheduler to be idle")
        .atMost(WAIT)
        .until(() -> server.schedulers().get(0).stats().running() == 0);
    DeviceTimeCounters.Snapshot c = server.schedulers().get(0).counters().snapshot();
    assertThat(c.measuredNs() - c.systemNs()).isEqualTo(c.chargedNs());
    try (Connection conn = db.dataSource().getConnection();
        PreparedStatement ps =
            conn.prepareStatement("SELECT coalesce(sum(device_ns), 0) FROM usage_records");
        ResultSet rs = ps.executeQuery()) {
      rs.next();
      assertThat(rs.getLong(1))
          .as("every step is in exactly one stored charge")
          .isEqualTo(c.chargedNs());
    }
  }
}
