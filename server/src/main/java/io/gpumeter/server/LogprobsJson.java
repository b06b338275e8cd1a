package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import io.gpumeter.batching.Choice;
import io.gpumeter.batching.TokenLogprob;
import io.gpumeter.model.IncrementalDecoder;
import io.gpumeter.model.Tokenizer;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Writes logprobs in OpenAI's two shapes: the completions object ({@code tokens}, {@code
 * token_logprobs}, {@code top_logprobs}, {@code text_offset}) and the chat object ({@code
 * content[]} of {@code token}, {@code logprob}, {@code bytes}, {@code top_logprobs}).
 *
 * <p>A token's string is its bytes as UTF-8 when they are a whole UTF-8 text, else {@code
 * bytes:\xNN...} (OpenAI's spelling for a token that holds part of a character); {@code bytes}
 * always holds the raw bytes. A log probability that is not finite (a token the model gives no
 * chance) is written as {@value #FLOOR}, as OpenAI does. Offsets count UTF-16 units of the choice's
 * text (Java's string length), each token's offset being where its text begins.
 */
final class LogprobsJson {
  /** Written for a log probability of minus infinity. */
  static final double FLOOR = -9999.0;

  private final Tokenizer tokenizer;

  LogprobsJson(Tokenizer tokenizer) {
    this.tokenizer = tokenizer;
  }

  /**
   * Consecutive tokens' logprobs, entries {@code [from, to)} of {@code logprobs}; an entry made by
   * {@link #unscored} is written with null logprobs.
   */
  record Span(List<TokenLogprob> logprobs, int[] offsets, int from, int to) {
    static Span of(List<TokenLogprob> logprobs, int[] offsets, int count) {
      return new Span(logprobs, offsets, 0, count);
    }
  }

  /** The first token of an echoed prompt: it has no context, so OpenAI gives it no logprob. */
  static TokenLogprob unscored(int token) {
    return new TokenLogprob(token, Float.NaN, null, null);
  }

  /**
   * The logprobs of a choice answered with {@code echo}: its prompt's tokens ({@code prompt}, whose
   * text is {@code echoed}: the first {@link #unscored}, then {@link Choice#promptLogprobs}), then
   * {@code completion}, the choice's own span, its offsets moved past the echoed text.
   */
  Span echoed(int[] prompt, Choice choice, String echoed, Span completion) {
    List<TokenLogprob> all = new ArrayList<>(prompt.length + completion.to());
    all.add(unscored(prompt[0]));
    all.addAll(choice.promptLogprobs());
    int[] offsets = Arrays.copyOf(offsets(prompt), prompt.length + completion.to());
    for (int i = completion.from(); i < completion.to(); i++) {
      all.add(completion.logprobs().get(i));
      offsets[prompt.length + i - completion.from()] = echoed.length() + completion.offsets()[i];
    }
    return new Span(all, offsets, 0, all.size());
  }

  /**
   * Each token's text offset in the decoded text of {@code tokens} (the decoder that streaming
   * uses, so a character split across tokens begins at its first token).
   */
  int[] offsets(int[] tokens) {
    IncrementalDecoder d = new IncrementalDecoder(tokenizer);
    int[] offsets = new int[tokens.length];
    int length = 0;
    for (int i = 0; i < tokens.length; i++) {
      offsets[i] = length;
      length += d.add(tokens[i]).length();
    }
    return offsets;
  }

  /**
   * How many tokens belong to {@code text}, a choice's text once a stop string is cut off: those
   * that begin in it (a token that adds no text at its end, such as a special token, is left out,
   * as the streamed chunks leave it out).
   */
  static int kept(int[] offsets, String text) {
    int n = 0;
    while (n < offsets.length && offsets[n] < text.length()) {
      n++;
    }
    return n;
  }

  /** The completions {@code logprobs} object for {@code span}, offsets moved by {@code base}. */
  void writeCompletion(JsonGenerator g, String field, Span span, int base) throws IOException {
    g.writeObjectFieldStart(field);
    g.writeArrayFieldStart("tokens");
    for (int i = span.from(); i < span.to(); i++) {
      g.writeString(string(span.logprobs().get(i).token()));
    }
    g.writeEndArray();
    g.writeArrayFieldStart("token_logprobs");
    for (int i = span.from(); i < span.to(); i++) {
      TokenLogprob lp = span.logprobs().get(i);
      if (lp.topTokens() == null) {
        g.writeNull(); // unscored
      } else {
        writeLogprob(g, lp.logprob());
      }
    }
    g.writeEndArray();
    g.writeArrayFieldStart("top_logprobs");
    for (int i = span.from(); i < span.to(); i++) {
      TokenLogprob lp = span.logprobs().get(i);
      if (lp.topTokens() == null) {
        g.writeNull(); // unscored
        continue;
      }
      g.writeStartObject();
      for (int j = 0; j < lp.topTokens().length; j++) {
        g.writeFieldName(string(lp.topTokens()[j]));
        writeLogprob(g, lp.topLogprobs()[j]);
      }
      g.writeEndObject();
    }
    g.writeEndArray();
    g.writeArrayFieldStart("text_offset");
    for (int i = span.from(); i < span.to(); i++) {
      g.writeNumber(base + span.offsets()[i]);
    }
    g.writeEndArray();
    g.writeEndObject();
  }

  /** The chat {@code logprobs} object ({@code content} and {@code refusal}) for {@code span}. */
  void writeChat(JsonGenerator g, String field, Span span) throws IOException {
    g.writeObjectFieldStart(field);
    g.writeArrayFieldStart("content");
    for (int i = span.from(); i < span.to(); i++) {
      TokenLogprob lp = span.logprobs().get(i);
      g.writeStartObject();
      writeToken(g, lp.token(), lp.logprob());
      g.writeArrayFieldStart("top_logprobs");
      for (int j = 0; j < lp.topTokens().length; j++) {
        g.writeStartObject();
        writeToken(g, lp.topTokens()[j], lp.topLogprobs()[j]);
        g.writeEndObject();
      }
      g.writeEndArray();
      g.writeEndObject();
    }
    g.writeEndArray();
    g.writeNullField("refusal");
    g.writeEndObject();
  }

  private void writeToken(JsonGenerator g, int token, float logprob) throws IOException {
    byte[] bytes = tokenizer.tokenBytes(token);
    g.writeStringField("token", string(bytes));
    g.writeFieldName("logprob");
    writeLogprob(g, logprob);
    g.writeArrayFieldStart("bytes");
    for (byte b : bytes) {
      g.writeNumber(b & 0xff);
    }
    g.writeEndArray();
  }

  private static void writeLogprob(JsonGenerator g, float logprob) throws IOException {
    g.writeNumber(Float.isFinite(logprob) ? (double) logprob : FLOOR);
  }

  String string(int token) {
    return string(tokenizer.tokenBytes(token));
  }

  /** The bytes as text when they are whole UTF-8, else {@code bytes:\xNN...}. */
  static String string(byte[] bytes) {
    try {
      return StandardCharsets.UTF_8
          .newDecoder()
          .onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT)
          .decode(ByteBuffer.wrap(bytes))
          .toString();
    } catch (CharacterCodingException e) {
      StringBuilder s = new StringBuilder("bytes:");
      for (byte b : bytes) {
        s.append("\\x").append(Character.forDigit((b >> 4) & 0xf, 16));
        s.append(Character.forDigit(b & 0xf, 16));
      }
      return s.toString();
    }
  }
}
