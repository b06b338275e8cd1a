package io.gpumeter.server;

import io.gpumeter.batching.GenerationResult;

/**
 * The events of a streamed {@code /v1/completions} answer: {@code text_completion} chunks with one
 * choice each (its {@code index}, and its {@code logprobs} when asked for), and (with {@code
 * stream_options.include_usage}) a last chunk with no choices and the {@code usage} object the
 * non-streaming answer has, device time included.
 */
final class CompletionChunks implements SseStream.Format {
  private final String model;
  private final String id;
  private final long created;
  private final LogprobsJson logprobs;

  /**
   * @param logprobs writes the chunks' logprobs; null when the request did not ask for them
   */
  CompletionChunks(String model, String id, long created, LogprobsJson logprobs) {
    this.model = model;
    this.id = id;
    this.created = created;
    this.logprobs = logprobs;
  }

  @Override
  public Json.Writer opening(int index) {
    return null;
  }

  @Override
  public Json.Writer text(int index, String text, String finishReason, LogprobsJson.Span lp) {
    return g -> {
      g.writeStartObject();
      g.writeStringField("id", id);
      g.writeStringField("object", "text_completion");
      g.writeNumberField("created", created);
      g.writeStringField("model", model);
      g.writeArrayFieldStart("choices");
      g.writeStartObject();
      g.writeStringField("text", text);
      g.writeNumberField("index", index);
      if (lp != null && logprobs != null) {
        logprobs.writeCompletion(g, "logprobs", lp, 0);
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
      g.writeStartObject();
      g.writeStringField("id", id);
      g.writeStringField("object", "text_completion");
      g.writeNumberField("created", created);
      g.writeStringField("model", model);
      g.writeArrayFieldStart("choices");
      g.writeEndArray();
      CompletionsEndpoint.writeUsage(g, result.usage(), receipt);
      g.writeEndObject();
    };
  }
}
