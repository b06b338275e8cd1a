package io.gpumeter.model;

import java.util.Arrays;

/**
 * Turns a stream of generated tokens into text pieces that never end inside a character: each
 * {@link #add} returns the text that can be shown now, holding back the bytes of a character that
 * later tokens may still complete ({@link Tokenizer#decodableEnd}); {@link #flush} returns what is
 * left once the stream ends (an unfinished character then decodes to U+FFFD). The pieces joined
 * equal {@code tokenizer.decode(allTokens)} whenever the full text has no invalid sequence.
 *
 * <p>The token-at-a-time face of {@link StreamDecoder}, which does the decoding: it keeps the
 * sequence's ids and hands them to one {@code StreamDecoder}, so the server's streaming (SSE, stop
 * strings, logprobs text) and any other caller of {@code StreamDecoder} cut text the same way, for
 * every tokenizer (bytes, Hugging Face BPE with byte tokens or byte fallback).
 *
 * <p>Not thread-safe: one decoder per stream, used by one thread at a time.
 */
public final class IncrementalDecoder {
  private final StreamDecoder stream;
  private int[] tokens = new int[16];
  private int length;

  public IncrementalDecoder(Tokenizer tokenizer) {
    this.stream = new StreamDecoder(tokenizer);
  }

  /** Adds one token; returns the text it completes (often empty, never null). */
  public String add(int token) {
    if (length == tokens.length) {
      tokens = Arrays.copyOf(tokens, length * 2);
    }
    tokens[length++] = token;
    return stream.next(tokens, length);
  }

  /** The text held back so far, decoded as it is; the decoder is then empty of pending bytes. */
  public String flush() {
    return stream.finish(tokens, length);
  }

  /** Tokens added so far. */
  public int tokenCount() {
    return length;
  }
}
