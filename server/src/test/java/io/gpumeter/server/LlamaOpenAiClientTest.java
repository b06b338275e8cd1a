package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.core.JsonValue;
import com.openai.core.http.StreamResponse;
import com.openai.models.completions.Completion;
import com.openai.models.completions.CompletionCreateParams;
import com.openai.models.completions.CompletionUsage;
import com.openai.models.models.Model;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.db.Database;
import io.gpumeter.model.HfTokenizer;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The Llama BPE model end to end with the official OpenAI Java client: a completion on {@code
 * tiny-llama-bpe} (Hugging Face tokenizer through DJL, exported Llama through the scheduler), its
 * prompt counted in BPE tokens, and its charge stored in PostgreSQL equal to the response's usage.
 */
class LlamaOpenAiClientTest {
  private static final String MODEL = "tiny-llama-bpe";

  private static GpumeterServer server;
  private static Database db;
  private static OpenAIClient openai;

  @BeforeAll
  static void start() throws Exception {
    server = GpumeterServer.start(TestServers.config("llama-openai").build(), StepListener.NONE);
    db = Database.start(server.config().toolDatabaseConfig());
    CreatedApiKey key = server.billing().apiKeys().create("llama-openai");
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

  @Test
  void aCompletionOnTheLlamaBpeModelIsChargedAsItsUsageSays() throws Exception {
    String prompt = "The Python interpreter reads a module";
    Completion c =
        openai
            .completions()
            .create(
                CompletionCreateParams.builder()
                    .model(MODEL)
                    .prompt(prompt)
                    .maxTokens(16)
                    .temperature(0)
                    .build());
    assertThat(c.model()).isEqualTo(MODEL);
    assertThat(c.choices()).hasSize(1);
    assertThat(c.choices().get(0).finishReason().toString()).isIn("stop", "length");
    CompletionUsage u = c.usage().orElseThrow();
    assertThat(u.completionTokens()).isBetween(1L, 16L);
    // the prompt is counted in the model's BPE tokens, not bytes
    Path dir = TestServers.repoRoot().resolve("models").resolve(MODEL);
    try (HfTokenizer tok = HfTokenizer.open(dir.resolve(HfTokenizer.FILE_NAME), 2048)) {
      assertThat(u.promptTokens()).isEqualTo(tok.encode(prompt).length);
    }
    assertThat(u.promptTokens()).isLessThan(prompt.length() / 2);
    JsonValue ns = u._additionalProperties().get("device_time_ns");
    assertThat(ns).as("usage carries device_time_ns").isNotNull();
    long deviceNs = ns.convert(Long.class);
    assertThat(deviceNs).isPositive().isEqualTo(storedDeviceNs(c.id()));

    Model m = openai.models().retrieve(MODEL);
    assertThat(m.id()).isEqualTo(MODEL);
    assertThat(m._additionalProperties().get("parameters").convert(Long.class))
        .isEqualTo(1_054_848L);
  }

  /**
   * Streaming a BPE model (whose multi-byte characters are split over byte tokens) goes through the
   * tokenizer's {@code StreamDecoder}: with the bytes of é, 中 and 😀 favoured by logit_bias and
   * sampling at temperature 1 under fixed seeds, each streamed completion, joined, equals the same
   * request unstreamed, and the texts hold whole multi-byte characters (and, where sampling drew
   * broken byte runs, the same U+FFFD in both).
   */
  @Test
  void streamedTextOfTheBpeModelEqualsTheUnstreamedTextWithMultiByteCharacters() throws Exception {
    Path json = TestServers.repoRoot().resolve("models").resolve(MODEL).resolve("tokenizer.json");
    CompletionCreateParams.LogitBias.Builder bias = CompletionCreateParams.LogitBias.builder();
    for (int b : new int[] {0xC3, 0xA9, 0xE4, 0xB8, 0xAD, 0xF0, 0x9F, 0x98, 0x80}) {
      bias.putAdditionalProperty(Integer.toString(byteToken(json, b)), JsonValue.from(6));
    }
    StringBuilder all = new StringBuilder();
    for (long seed = 1; seed <= 6; seed++) {
      CompletionCreateParams p =
          CompletionCreateParams.builder()
              .model(MODEL)
              .prompt("café naïve — 中文 😀 ")
              .maxTokens(40)
              .temperature(1.0)
              .seed(seed)
              .logitBias(bias.build())
              .build();
      String whole = openai.completions().create(p).choices().get(0).text();
      StringBuilder streamed = new StringBuilder();
      try (StreamResponse<Completion> s = openai.completions().createStreaming(p)) {
        s.stream().forEach(c -> c.choices().forEach(ch -> streamed.append(ch.text())));
      }
      assertThat(streamed.toString()).as("seed %d", seed).isEqualTo(whole);
      all.append(whole);
    }
    String text = all.toString();
    assertThat(text.codePoints().filter(c -> c >= 0x80 && c != 0xFFFD).count())
        .as("whole multi-byte characters in %s", text)
        .isPositive();
  }

  /** The byte-level token that is the single byte {@code b} (GPT-2's byte-to-character table). */
  private static int byteToken(Path tokenizerJson, int b) throws java.io.IOException {
    int rank = 0;
    int ch = -1;
    for (int x = 0; x < 256; x++) {
      boolean printable =
          (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF);
      int c = printable ? x : 256 + rank++;
      if (x == b) {
        ch = c;
      }
    }
    return Json.MAPPER
        .readTree(tokenizerJson.toFile())
        .get("model")
        .get("vocab")
        .get(new String(Character.toChars(ch)))
        .asInt();
  }

  /** device_ns of the request's one usage record (the response waited for it to be durable). */
  private static long storedDeviceNs(String id) throws Exception {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT count(*), coalesce(sum(device_ns), 0) FROM usage_records"
                    + " WHERE request_id = ?")) {
      ps.setString(1, id);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        assertThat(rs.getLong(1)).as("usage records of " + id).isEqualTo(1);
        return rs.getLong(2);
      }
    }
  }
}
