package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.core.JsonValue;
import com.openai.errors.BadRequestException;
import com.openai.models.completions.Completion;
import com.openai.models.completions.CompletionChoice;
import com.openai.models.completions.CompletionCreateParams;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.db.Database;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Sampling parameters, {@code n}, {@code echo} and token-id prompts on {@code /v1/completions},
 * through the official OpenAI Java client against a live server (real model, real PostgreSQL).
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
class OpenAiSamplingTest {
  private static final String MODEL = "demo-byte-lm";

  private static GpumeterServer server;
  private static Database db;
  private static OpenAIClient openai;

  @BeforeAll
  static void start() throws Exception {
    server = GpumeterServer.start(TestServers.config("openai-sampling").build(), StepListener.NONE);
    db = Database.start(server.config().toolDatabaseConfig());
    CreatedApiKey key = server.billing().apiKeys().create("sampling");
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
    if (db != null) {
      db.close();
    }
    if (server != null) {
      server.close();
    }
  }

  private static CompletionCreateParams.Builder params(String prompt, long maxTokens) {
    return CompletionCreateParams.builder().model(MODEL).prompt(prompt).maxTokens(maxTokens);
  }

  private static List<String> texts(Completion c) {
    return c.choices().stream().map(CompletionChoice::text).toList();
  }

  @Test
  void nChoicesAreOneRequestChargedOnceWithAllOfTheirTime() throws Exception {
    Completion c =
        openai
            .completions()
            .create(params("Once upon a time", 12).n(3).temperature(0.9).seed(11).build());
    assertThat(c.choices()).hasSize(3);
    for (int i = 0; i < 3; i++) {
      assertThat(c.choices().get(i).index()).isEqualTo(i);
    }
    assertThat(texts(c)).doesNotHaveDuplicates();
    long generated = c.usage().orElseThrow().completionTokens();
    long deviceNs =
        c.usage().orElseThrow()._additionalProperties().get("device_time_ns").convert(Long.class);
    try (Connection conn = db.dataSource().getConnection();
        PreparedStatement ps =
            conn.prepareStatement(
                "SELECT device_ns, completion_tokens FROM usage_records WHERE request_id = ?")) {
      ps.setString(1, c.id());
      try (ResultSet rs = ps.executeQuery()) {
        assertThat(rs.next()).as("the request's charge").isTrue();
        assertThat(rs.getLong(1)).isEqualTo(deviceNs).isPositive();
        assertThat(rs.getLong(2)).isEqualTo(generated);
        assertThat(rs.next()).as("one charge for all three choices").isFalse();
      }
    }
  }

  @Test
  void aSeedWithEverySamplingOptionReproducesTheText() {
    CompletionCreateParams p =
        params("The weather today", 24)
            .n(2)
            .temperature(1.1)
            .seed(1234)
            .topP(0.9)
            .presencePenalty(0.5)
            .frequencyPenalty(0.3)
            .logitBias(
                CompletionCreateParams.LogitBias.builder()
                    .putAdditionalProperty("32", JsonValue.from(-3))
                    .build())
            .putAdditionalBodyProperty("top_k", JsonValue.from(40))
            .build();
    List<String> first = texts(openai.completions().create(p));
    List<String> second = texts(openai.completions().create(p));
    assertThat(second).isEqualTo(first);
    CompletionCreateParams greedy = params("The weather today", 24).temperature(0).build();
    assertThat(texts(openai.completions().create(greedy)))
        .isEqualTo(texts(openai.completions().create(greedy)));
  }

  @Test
  void logitBiasOfOneHundredPicksTheTokenEveryTime() {
    Completion c =
        openai
            .completions()
            .create(
                params("Anything", 8)
                    .logitBias(
                        CompletionCreateParams.LogitBias.builder()
                            .putAdditionalProperty("122", JsonValue.from(100))
                            .build())
                    .build());
    assertThat(c.choices().get(0).text()).isEqualTo("zzzzzzzz");
  }

  @Test
  void echoPrependsThePromptAlsoForTokenIdPrompts() {
    Completion c = openai.completions().create(params("Hello there", 5).echo(true).n(2).build());
    assertThat(texts(c)).hasSize(2).allMatch(t -> t.startsWith("Hello there"));
    Completion tokens =
        openai
            .completions()
            .create(
                CompletionCreateParams.builder()
                    .model(MODEL)
                    .prompt(CompletionCreateParams.Prompt.ofArrayOfTokens(List.of(72L, 105L)))
                    .maxTokens(4)
                    .echo(true)
                    .build());
    assertThat(tokens.choices().get(0).text()).startsWith("Hi");
    assertThat(tokens.usage().orElseThrow().promptTokens()).isEqualTo(2);
  }

  @Test
  void badValuesOfEveryNewParameterAre400sNamingIt() {
    Map<String, Object[]> bad =
        Map.ofEntries(
            Map.entry("top_p", new Object[] {1.5, -0.1, "high"}),
            Map.entry("top_k", new Object[] {-1, 2.5, "many"}),
            Map.entry("presence_penalty", new Object[] {2.5, -3, true}),
            Map.entry("frequency_penalty", new Object[] {-2.01, 9, "x"}),
            Map.entry(
                "logit_bias",
                new Object[] {
                  Map.of("257", 1), Map.of("abc", 1), Map.of("5", 101), Map.of("5", "x"), 3
                }),
            Map.entry("n", new Object[] {0, 129, 1.5, "two"}),
            Map.entry("echo", new Object[] {"yes", 1}),
            Map.entry("suffix", new Object[] {"after"}),
            Map.entry("logprobs", new Object[] {6, -1, "two"}),
            Map.entry("best_of", new Object[] {2}));
    for (Map.Entry<String, Object[]> e : bad.entrySet()) {
      for (Object value : e.getValue()) {
        assertThatThrownBy(
                () ->
                    openai
                        .completions()
                        .create(
                            params("x", 2)
                                .putAdditionalBodyProperty(e.getKey(), JsonValue.from(value))
                                .build()),
                "%s = %s",
                e.getKey(),
                value)
            .isInstanceOfSatisfying(
                BadRequestException.class,
                ex -> {
                  assertThat(ex.statusCode()).isEqualTo(400);
                  assertThat(ex.param()).as("%s = %s", e.getKey(), value).contains(e.getKey());
                });
      }
    }
    for (List<Long> tokens : List.of(List.of(257L), List.of(-1L))) {
      assertThatThrownBy(
              () ->
                  openai
                      .completions()
                      .create(
                          CompletionCreateParams.builder()
                              .model(MODEL)
                              .prompt(CompletionCreateParams.Prompt.ofArrayOfTokens(tokens))
                              .build()))
          .isInstanceOfSatisfying(
              BadRequestException.class, ex -> assertThat(ex.param()).contains("prompt"));
    }
    // the server still serves
    assertThat(openai.completions().create(params("ok", 2).build()).choices()).hasSize(1);
  }
}
