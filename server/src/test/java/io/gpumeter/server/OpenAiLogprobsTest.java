package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.core.JsonValue;
import com.openai.core.http.StreamResponse;
import com.openai.errors.BadRequestException;
import com.openai.models.chat.completions.ChatCompletion;
import com.openai.models.chat.completions.ChatCompletionChunk;
import com.openai.models.chat.completions.ChatCompletionCreateParams;
import com.openai.models.chat.completions.ChatCompletionStreamOptions;
import com.openai.models.chat.completions.ChatCompletionTokenLogprob;
import com.openai.models.completions.Completion;
import com.openai.models.completions.CompletionChoice;
import com.openai.models.completions.CompletionCreateParams;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Logprobs on both endpoints, streamed and not, {@code n > 1} streamed, and chat's sampling
 * options, through the official OpenAI Java client against a live server (real model, real
 * PostgreSQL).
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
class OpenAiLogprobsTest {
  private static final String MODEL = "demo-byte-lm";

  private static GpumeterServer server;
  private static OpenAIClient openai;

  @BeforeAll
  static void start() throws Exception {
    server = GpumeterServer.start(TestServers.config("openai-logprobs").build(), StepListener.NONE);
    CreatedApiKey key = server.billing().apiKeys().create("logprobs");
    openai =
        OpenAIOkHttpClient.builder()
            .baseUrl("http://127.0.0.1:" + server.port() + "/v1")
            .apiKey(key.plaintext())
            .maxRetries(0)
            .build();
  }

  @AfterAll
  static void stop() {
    if (openai != null) {
      openai.close();
    }
    if (server != null) {
      server.close();
    }
  }

  private static CompletionCreateParams.Builder completion(String prompt, long maxTokens) {
    return CompletionCreateParams.builder()
        .model(MODEL)
        .prompt(prompt)
        .maxTokens(maxTokens)
        .temperature(0);
  }

  private static ChatCompletionCreateParams.Builder chat(String content, long maxTokens) {
    return ChatCompletionCreateParams.builder()
        .model(MODEL)
        .addUserMessage(content)
        .maxCompletionTokens(maxTokens)
        .temperature(0);
  }

  @Test
  void greedyCompletionLogprobsDescribeTheTextAndTheMostLikelyTokens() {
    Completion c =
        openai.completions().create(completion("Once upon a time", 16).logprobs(3).build());
    CompletionChoice choice = c.choices().get(0);
    CompletionChoice.Logprobs lp = choice.logprobs().orElseThrow();
    List<String> tokens = lp.tokens().orElseThrow();
    List<Double> logprobs = lp.tokenLogprobs().orElseThrow();
    List<Long> offsets = lp.textOffset().orElseThrow();
    var top = lp.topLogprobs().orElseThrow();
    assertThat(tokens).hasSize((int) c.usage().orElseThrow().completionTokens());
    assertThat(logprobs).hasSameSizeAs(tokens);
    assertThat(offsets).hasSameSizeAs(tokens);
    assertThat(top).hasSameSizeAs(tokens);
    String text = choice.text();
    for (int i = 0; i < tokens.size(); i++) {
      assertThat(logprobs.get(i)).isLessThanOrEqualTo(0.0);
      if (i > 0) {
        assertThat(offsets.get(i)).isGreaterThanOrEqualTo(offsets.get(i - 1));
      }
      String token = tokens.get(i);
      if (!token.startsWith("bytes:")) {
        assertThat(text.substring(offsets.get(i).intValue())).startsWith(token);
      }
      Map<String, JsonValue> alternatives = top.get(i)._additionalProperties();
      assertThat(alternatives).hasSize(3).containsKey(token);
      // greedy: the chosen token is the most likely one
      double best =
          alternatives.values().stream()
              .mapToDouble(v -> v.convert(Double.class))
              .max()
              .orElseThrow();
      assertThat(logprobs.get(i)).isEqualTo(best);
    }
  }

  @Test
  void streamedCompletionLogprobsAreTheSameAsTheWholeAnswers() throws Exception {
    CompletionCreateParams p = completion("The weather today", 20).logprobs(2).build();
    CompletionChoice.Logprobs whole =
        openai.completions().create(p).choices().get(0).logprobs().orElseThrow();
    List<String> tokens = new ArrayList<>();
    List<Double> logprobs = new ArrayList<>();
    List<Long> offsets = new ArrayList<>();
    try (StreamResponse<Completion> s = openai.completions().createStreaming(p)) {
      s.stream()
          .flatMap(c -> c.choices().stream())
          .forEach(
              ch ->
                  ch.logprobs()
                      .ifPresent(
                          lp -> {
                            tokens.addAll(lp.tokens().orElseThrow());
                            logprobs.addAll(lp.tokenLogprobs().orElseThrow());
                            offsets.addAll(lp.textOffset().orElseThrow());
                          }));
    }
    assertThat(tokens).isEqualTo(whole.tokens().orElseThrow());
    assertThat(logprobs).isEqualTo(whole.tokenLogprobs().orElseThrow());
    assertThat(offsets).isEqualTo(whole.textOffset().orElseThrow());
  }

  @Test
  void chatLogprobsCarryTokenBytesAndTopAlternativesAlsoWhenStreamed() throws Exception {
    ChatCompletionCreateParams p =
        chat("Tell me a story", 12).logprobs(true).topLogprobs(4).build();
    ChatCompletion c = openai.chat().completions().create(p);
    List<ChatCompletionTokenLogprob> content =
        c.choices().get(0).logprobs().orElseThrow().content().orElseThrow();
    assertThat(content).hasSize((int) c.usage().orElseThrow().completionTokens());
    StringBuilder bytesText = new StringBuilder();
    List<Byte> allBytes = new ArrayList<>();
    for (ChatCompletionTokenLogprob t : content) {
      assertThat(t.topLogprobs()).hasSize(4);
      assertThat(t.topLogprobs().get(0).token()).isEqualTo(t.token()); // greedy
      assertThat(t.topLogprobs().get(0).logprob()).isEqualTo(t.logprob());
      for (long b : t.bytes().orElseThrow()) {
        allBytes.add((byte) b);
      }
      if (!t.token().startsWith("bytes:")) {
        assertThat(t.token().getBytes(StandardCharsets.UTF_8))
            .isEqualTo(toArray(t.bytes().orElseThrow()));
      }
      bytesText.append(t.token());
    }
    // the tokens' bytes are the answer's text
    byte[] joined = new byte[allBytes.size()];
    for (int i = 0; i < joined.length; i++) {
      joined[i] = allBytes.get(i);
    }
    assertThat(new String(joined, StandardCharsets.UTF_8))
        .isEqualTo(c.choices().get(0).message().content().orElseThrow());

    List<ChatCompletionTokenLogprob> streamed = new ArrayList<>();
    try (StreamResponse<ChatCompletionChunk> s = openai.chat().completions().createStreaming(p)) {
      s.stream()
          .flatMap(ch -> ch.choices().stream())
          .forEach(ch -> ch.logprobs().flatMap(l -> l.content()).ifPresent(streamed::addAll));
    }
    assertThat(streamed).hasSameSizeAs(content);
    for (int i = 0; i < content.size(); i++) {
      assertThat(streamed.get(i).token()).isEqualTo(content.get(i).token());
      assertThat(streamed.get(i).logprob()).isEqualTo(content.get(i).logprob());
    }
  }

  @Test
  void withoutLogprobsTheFieldIsNull() {
    assertThat(openai.completions().create(completion("x", 3).build()).choices().get(0).logprobs())
        .isEmpty();
    assertThat(openai.chat().completions().create(chat("x", 3).build()).choices().get(0).logprobs())
        .isEmpty();
    ChatCompletion noTop = openai.chat().completions().create(chat("x", 3).logprobs(true).build());
    assertThat(noTop.choices().get(0).logprobs().orElseThrow().content().orElseThrow())
        .isNotEmpty()
        .allSatisfy(t -> assertThat(t.topLogprobs()).isEmpty());
  }

  @Test
  void chatAcceptsTheCompletionsSamplingOptionsAndNChoices() {
    ChatCompletionCreateParams p =
        chat("The weather today", 16)
            .n(3)
            .temperature(1.1)
            .seed(99)
            .topP(0.9)
            .presencePenalty(0.4)
            .frequencyPenalty(0.2)
            .logitBias(
                ChatCompletionCreateParams.LogitBias.builder()
                    .putAdditionalProperty("32", JsonValue.from(-2))
                    .build())
            .putAdditionalBodyProperty("top_k", JsonValue.from(40))
            .build();
    ChatCompletion first = openai.chat().completions().create(p);
    ChatCompletion second = openai.chat().completions().create(p);
    assertThat(first.choices()).hasSize(3);
    for (int i = 0; i < 3; i++) {
      assertThat(first.choices().get(i).index()).isEqualTo(i);
      assertThat(first.choices().get(i).message().content())
          .isEqualTo(second.choices().get(i).message().content());
    }
    // logit_bias of 100 picks the token every time, as on completions
    ChatCompletion z =
        openai
            .chat()
            .completions()
            .create(
                chat("Anything", 6)
                    .temperature(1)
                    .logitBias(
                        ChatCompletionCreateParams.LogitBias.builder()
                            .putAdditionalProperty("122", JsonValue.from(100))
                            .build())
                    .build());
    assertThat(z.choices().get(0).message().content()).contains("zzzzzz");
  }

  @Test
  void badLogprobsAndSamplingValuesAre400sNamingTheParameter() {
    Map<String, Object[]> completionBad =
        Map.of("logprobs", new Object[] {6, -1, 1.5, "two", true});
    for (Map.Entry<String, Object[]> e : completionBad.entrySet()) {
      for (Object v : e.getValue()) {
        assertThatThrownBy(
                () ->
                    openai
                        .completions()
                        .create(
                            completion("x", 2)
                                .putAdditionalBodyProperty(e.getKey(), JsonValue.from(v))
                                .build()),
                "%s = %s",
                e.getKey(),
                v)
            .isInstanceOfSatisfying(
                BadRequestException.class, ex -> assertThat(ex.param()).contains(e.getKey()));
      }
    }
    List<Map.Entry<Map<String, Object>, String>> chatBad =
        List.of(
            Map.entry(Map.of("logprobs", "yes"), "logprobs"),
            Map.entry(Map.of("logprobs", 1), "logprobs"),
            Map.entry(Map.of("logprobs", true, "top_logprobs", 21), "top_logprobs"),
            Map.entry(Map.of("logprobs", true, "top_logprobs", -1), "top_logprobs"),
            Map.entry(Map.of("logprobs", true, "top_logprobs", 2.5), "top_logprobs"),
            Map.entry(Map.of("top_logprobs", 2), "top_logprobs"),
            Map.entry(Map.of("logprobs", false, "top_logprobs", 2), "top_logprobs"),
            Map.entry(Map.of("top_p", 1.5), "top_p"),
            Map.entry(Map.of("top_k", -1), "top_k"),
            Map.entry(Map.of("presence_penalty", 3), "presence_penalty"),
            Map.entry(Map.of("frequency_penalty", "x"), "frequency_penalty"),
            Map.entry(Map.of("logit_bias", Map.of("257", 1)), "logit_bias"),
            Map.entry(Map.of("n", 0), "n"),
            Map.entry(Map.of("n", 2, "stop", "a"), "stop"));
    for (Map.Entry<Map<String, Object>, String> c : chatBad) {
      ChatCompletionCreateParams.Builder b = chat("x", 2);
      c.getKey().forEach((k, v) -> b.putAdditionalBodyProperty(k, JsonValue.from(v)));
      assertThatThrownBy(() -> openai.chat().completions().create(b.build()), "%s", c.getKey())
          .isInstanceOfSatisfying(
              BadRequestException.class,
              ex -> {
                assertThat(ex.statusCode()).isEqualTo(400);
                assertThat(ex.param()).as("%s", c.getKey()).contains(c.getValue());
              });
    }
    assertThat(openai.chat().completions().create(chat("ok", 2).build()).choices()).hasSize(1);
  }

  @Test
  void nChoicesStreamWithTheirIndexAndEqualTheWholeAnswer() throws Exception {
    java.util.function.Supplier<CompletionCreateParams.Builder> base =
        () ->
            CompletionCreateParams.builder()
                .model(MODEL)
                .prompt("Once upon a time")
                .maxTokens(10)
                .n(3)
                .temperature(0.9)
                .seed(5)
                .logprobs(1);
    Completion whole = openai.completions().create(base.get().build());
    CompletionCreateParams p =
        base.get()
            .streamOptions(ChatCompletionStreamOptions.builder().includeUsage(true).build())
            .build();
    StringBuilder[] texts = {new StringBuilder(), new StringBuilder(), new StringBuilder()};
    int[] finishes = new int[3];
    List<List<String>> tokens = List.of(new ArrayList<>(), new ArrayList<>(), new ArrayList<>());
    Completion last = null;
    try (StreamResponse<Completion> s = openai.completions().createStreaming(p)) {
      for (Completion c : (Iterable<Completion>) s.stream()::iterator) {
        last = c;
        for (CompletionChoice ch : c.choices()) {
          int i = (int) ch.index();
          texts[i].append(ch.text());
          if (!ch._finishReason().isNull() && !ch._finishReason().isMissing()) {
            finishes[i]++;
          }
          ch.logprobs().ifPresent(lp -> tokens.get(i).addAll(lp.tokens().orElseThrow()));
        }
      }
    }
    for (int i = 0; i < 3; i++) {
      CompletionChoice w = whole.choices().get(i);
      assertThat(texts[i].toString()).as("choice %s", i).isEqualTo(w.text());
      assertThat(finishes[i]).as("finish chunks of choice %s", i).isEqualTo(1);
      assertThat(tokens.get(i)).isEqualTo(w.logprobs().orElseThrow().tokens().orElseThrow());
    }
    assertThat(last.choices()).isEmpty();
    assertThat(last.usage().orElseThrow().completionTokens())
        .isEqualTo(whole.usage().orElseThrow().completionTokens());

    List<ChatCompletionChunk> chunks;
    try (StreamResponse<ChatCompletionChunk> s =
        openai.chat().completions().createStreaming(chat("Hi", 6).n(2).build())) {
      chunks = s.stream().toList();
    }
    assertThat(chunks.get(0).choices().get(0).index()).isEqualTo(0);
    assertThat(chunks.get(0).choices().get(0).delta().role()).isPresent();
    assertThat(chunks.get(1).choices().get(0).index()).isEqualTo(1);
    assertThat(chunks.get(1).choices().get(0).delta().role()).isPresent();
    assertThat(
            chunks.stream()
                .flatMap(c -> c.choices().stream())
                .filter(c -> c.finishReason().isPresent())
                .map(c -> c.index())
                .sorted()
                .toList())
        .containsExactly(0L, 1L);
  }

  private static byte[] toArray(List<Long> bytes) {
    byte[] out = new byte[bytes.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = (byte) bytes.get(i).longValue();
    }
    return out;
  }
}
