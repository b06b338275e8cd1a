package io.gpumeter.model;

import java.util.Arrays;
import java.util.Objects;

/**
 * Turns a stream of generated tokens into text pieces that never end inside a character: each
 * {@link #add} returns the text that can be shown now, holding back the bytes of a character that
 * later tokens may still complete ({@link Tokenizer#decodableEnd}); {@link #flush} returns what is
 * left once the stream ends (an unfinished character then decodes to U+FFFD). The pieces joined
 * equal {@code tokenizer.decode(allTokens)} whenever the full text has no invalid sequence.
 *
 * <p>Not thread-safe: one decoder per stream, used by one thread at a time.
 */
public final class IncrementalDecoder {
  private final Tokenizer tokenizer;
  private int[] tokens = new int[16];
  private int length;
  private int emitted;

  public IncrementalDecoder(Tokenizer tokenizer) {
    this.tokenizer = Objects.requireNonNull(tokenizer, "tokenizer");
  }

  /** Adds one token; returns the text it completes (often empty, never null). */
  public String add(int token) {
    if (length == tokens.length) {
      tokens = Arrays.copyOf(tokens, length * 2);
    }
    tokens[length++] = token;
    int end = tokenizer.decodableEnd(tokens, emitted, length);
    if (end <= emitted) {
      return "";
    }
    String piece = tokenizer.decode(tokens, emitted, end);
    emitted = end;
    return piece;
  }

  /** The text held back so far, decoded as it is; the decoder is then empty of pending bytes. */
  public String flush() {
    if (emitted == length) {
      return "";
    }
    String piece = tokenizer.decode(tokens, emitted, length);
    emitted = length;
    return piece;
  }

  /** Tokens added so far. */
  public int tokenCount() {
    return length;
  }
}
