package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.core.JsonValue;
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
