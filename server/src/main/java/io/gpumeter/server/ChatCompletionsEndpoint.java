package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import io.gpumeter.batching.Choice;
import io.gpumeter.batching.GenerationResult;
import io.gpumeter.batching.SamplingOptions;
import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.model.ModelException;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.io.IOException;
import java.util.List;
import java.util.Map;
import java.util.UUID;

/**
 * {@code POST /v1/chat/completions}: the messages are rendered into a prompt by the model's {@link
 * ChatTemplate}, then generated, charged and answered exactly as a completion ({@link
 * CompletionsEndpoint#generate}: admission, cancellation on disconnect, the durability wait, voids,
 * streaming). The answer is a {@code chat.completion} (or {@code chat.completion.chunk} events, the
 * first carrying {@code delta.role}) whose {@code usage} carries the device time charged.
 */
final class ChatCompletionsEndpoint {
  private final Map<String, ModelEndpoint> models;
  private final Authenticator auth;
  private final CompletionsEndpoint completions;
  private final Map<java.nio.file.Path, ChatTemplate> templates =
      new java.util.concurrent.ConcurrentHashMap<>();
  private final int maxTokensDefault;
  private final int maxTokensCap;

  /**
   * @throws ModelException if a model's chat template cannot be read or does not render
   */
  ChatCompletionsEndpoint(
      Map<String, ModelEndpoint> models,
      Authenticator auth,
      CompletionsEndpoint completions,
      int maxTokensDefault,
      int maxTokensCap) {
    this.models = models;
    this.auth = auth;
    this.completions = completions;
    this.maxTokensDefault = maxTokensDefault;
    this.maxTokensCap = maxTokensCap;
    for (ModelEndpoint m : models.values()) {
      ChatTemplate t = ChatTemplate.load(m.model().config().directory());
      if (t != null) {
        templates.put(m.model().config().directory(), t);
      }
    }
  }

  void handle(Exchange ex) {
    String requestId = "chatcmpl-" + newId();
    ex.requestId(requestId);
    ex.then(auth.authenticate(ex), principal -> submit(ex, requestId, principal));
  }

  private void submit(Exchange ex, String requestId, ApiKeyPrincipal principal) {
    // Before the body is parsed, so that an Idempotency-Key with stream: true is refused first.
    IdempotencyGate.Ticket ticket =
        completions.prepareIdempotency(ex, principal, requestId, "/v1/chat/completions");
    ChatParams p = ChatParams.parse(ex.body(), maxTokensDefault, maxTokensCap);
    ModelEndpoint m = completions.model(p.model());
    // Models loaded while serving (admin API) get their template on first use.
    ChatTemplate template;
    try {
      template = templates.computeIfAbsent(m.model().config().directory(), ChatTemplate::load);
    } catch (ModelException e) {
      throw ApiException.invalid(
          "model", "The model's chat template cannot be used: " + e.getMessage());
    }
    if (template == null) {
      throw new ApiException(
          HttpResponseStatus.BAD_REQUEST,
          ApiException.INVALID_REQUEST,
          "The model '"
              + m.name()
              + "' has no chat template ("
              + ChatTemplate.FILE_NAME
              + " with chat_template in its directory); use /v1/completions with it.",
          "model",
          "no_chat_template");
    }
    String prompt;
    try {
      prompt = template.render(p.messages());
    } catch (ModelException e) {
      throw ApiException.invalid(
          "messages", "The model's chat template refused the messages: " + e.getMessage());
    }
    int[] tokens = m.model().tokenizer().encode(prompt);
    if (tokens.length == 0) {
      tokens = new int[] {m.model().config().eosId()};
    }
    int[] promptTokens = tokens;
    // The same sampling options, n and stop rules as /v1/completions.
    int vocab = m.model().config().vocabSize();
    SamplingOptions sampling = SamplingParams.parse(p.body(), vocab);
    int n = CompletionOptions.parse(p.body(), m.scheduler().config().maxRunning()).n();
    int logprobs = LogprobParams.chat(p.body());
    if (n > 1 && !p.stop().isEmpty()) {
      throw ApiException.invalid("stop", "stop strings with n > 1 are not supported yet.");
    }
    String session = CompletionsEndpoint.session(ex, p.user(), requestId);
    completions.withTicket(
        ex,
        ticket,
        t ->
            completions.generate(
                new CompletionContext(
                    ex,
                    requestId,
                    principal,
                    m,
                    new int[][] {promptTokens},
                    CompletionContext.Decoding.of(p),
                    CHAT,
                    new CompletionsEndpoint.Extras(session, sampling, n, false, t, logprobs))));
  }

  static final CompletionsEndpoint.Answer CHAT =
      new CompletionsEndpoint.Answer() {
        @Override
        public Json.Writer whole(
            String model,
            List<String> texts,
            GenerationResult result,
            LogprobsJson logprobs,
            List<LogprobsJson.Span> spans,
            Receipt receipt) {
          return g -> writeChat(g, model, texts, result, logprobs, spans, receipt);
        }

        @Override
        public SseStream.Format stream(
            String model, String requestId, long created, LogprobsJson logprobs) {
          return new ChatChunks(model, requestId, created, logprobs);
        }
      };

  private static void writeChat(
      JsonGenerator g,
      String model,
      List<String> texts,
      GenerationResult r,
      LogprobsJson logprobs,
      List<LogprobsJson.Span> spans,
      Receipt receipt)
      throws IOException {
    UsageRecord u = r.usage();
    g.writeStartObject();
    g.writeStringField("id", u.requestId());
    g.writeStringField("object", "chat.completion");
    g.writeNumberField("created", u.startedAt().getEpochSecond());
    g.writeStringField("model", model);
    g.writeArrayFieldStart("choices");
    for (Choice c : r.choices()) {
      g.writeStartObject();
      g.writeNumberField("index", c.index());
      g.writeObjectFieldStart("message");
      g.writeStringField("role", "assistant");
      g.writeStringField("content", texts.get(c.index()));
      g.writeNullField("refusal");
      g.writeEndObject();
      if (logprobs != null) {
        logprobs.writeChat(g, "logprobs", spans.get(c.index()));
      } else {
        g.writeNullField("logprobs");
      }
      g.writeStringField("finish_reason", c.finishReason().openAiName());
      g.writeEndObject();
    }
    g.writeEndArray();
    CompletionsEndpoint.writeUsage(g, u, receipt);
    g.writeEndObject();
  }

  /**
   * {@code chat.completion.chunk} events: the role first (for each choice), then content deltas
   * (with their logprobs when asked for), then usage.
   */
  static final class ChatChunks implements SseStream.Format {
    private final String model;
    private final String id;
    private final long created;
    private final LogprobsJson logprobs;

    /**
     * @param logprobs writes the chunks' logprobs; null when the request did not ask for them
     */
    ChatChunks(String model, String id, long created, LogprobsJson logprobs) {
      this.model = model;
      this.id = id;
      this.created = created;
      this.logprobs = logprobs;
    }

    private void head(JsonGenerator g) throws IOException {
      g.writeStartObject();
      g.writeStringField("id", id);
      g.writeStringField("object", "chat.completion.chunk");
      g.writeNumberField("created", created);
      g.writeStringField("model", model);
    }

    @Override
    public Json.Writer opening(int index) {
      return g -> {
        head(g);
        g.writeArrayFieldStart("choices");
        g.writeStartObject();
        g.writeNumberField("index", index);
        g.writeObjectFieldStart("delta");
        g.writeStringField("role", "assistant");
        g.writeStringField("content", "");
        g.writeEndObject();
        g.writeNullField("logprobs");
        g.writeNullField("finish_reason");
        g.writeEndObject();
        g.writeEndArray();
        g.writeEndObject();
      };
    }

    @Override
    public Json.Writer text(int index, String text, String finishReason, LogprobsJson.Span lp) {
      return g -> {
        head(g);
        g.writeArrayFieldStart("choices");
        g.writeStartObject();
        g.writeNumberField("index", index);
        g.writeObjectFieldStart("delta");
        if (!text.isEmpty() || finishReason == null) {
          g.writeStringField("content", text);
        }
        g.writeEndObject();
        if (lp != null && logprobs != null) {
          logprobs.writeChat(g, "logprobs", lp);
        } else {
          g.writeNullField("logprobs");
        }
        g.writeStringField("finish_reason", finishReason);
        g.writeEndObject();
        g.writeEndArray();
        g.writeEndObject();
      };
    }

    @Override
    public Json.Writer usage(GenerationResult result, Receipt receipt) {
      return g -> {
        head(g);
        g.writeArrayFieldStart("choices");
        g.writeEndArray();
        CompletionsEndpoint.writeUsage(g, result.usage(), receipt);
        g.writeEndObject();
      };
    }
  }

  private static String newId() {
    UUID u = UUID.randomUUID();
    return Long.toHexString(u.getMostSignificantBits() | Long.MIN_VALUE)
        + Long.toHexString(u.getLeastSignificantBits() | Long.MIN_VALUE);
  }
}
