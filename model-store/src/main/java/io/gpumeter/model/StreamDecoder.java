package io.gpumeter.model;

import java.util.Objects;

/**
 * Turns the token ids of one growing sequence into text piece by piece, for streaming: each call
 * takes the ids so far and returns the text that is newly complete, never half of a UTF-8 character
 * (byte tokens of a multi-byte character, byte-fallback tokens) and never a leading space that one
 * decode of the whole sequence would not have. The pieces concatenated equal {@code
 * tokenizer.decode(ids)} once {@link #finish} has returned the rest.
 *
 * <p>Works with any {@link Tokenizer} through {@link Tokenizer#decodableEnd} and {@link
 * Tokenizer#decode(int[], int, int)}. One instance per sequence; not thread-safe.
 */
public final class StreamDecoder {
  private final Tokenizer tokenizer;
  private int emitted;

  public StreamDecoder(Tokenizer tokenizer) {
    this.tokenizer = Objects.requireNonNull(tokenizer, "tokenizer");
  }

  /**
   * The text that {@code ids[0..count)} completes beyond what earlier calls returned.
   *
   * @param ids the sequence's generated ids so far (earlier ids unchanged between calls)
   * @param count how many of {@code ids} are valid; never less than in an earlier call
   */
  public String next(int[] ids, int count) {
    if (count < emitted) {
      throw new IllegalArgumentException(
          "the sequence shrank: " + count + " ids after " + emitted + " were decoded");
    }
    int end = tokenizer.decodableEnd(ids, emitted, count);
    String text = decodeFrom(ids, end);
    emitted = end;
    return text;
  }

  /** The rest of the text, held back characters included (as U+FFFD if still incomplete). */
  public String finish(int[] ids, int count) {
    if (count < emitted) {
      throw new IllegalArgumentException(
          "the sequence shrank: " + count + " ids after " + emitted + " were decoded");
    }
    String text = decodeFrom(ids, count);
    emitted = count;
    return text;
  }

  /** Ids whose text was returned. */
  public int emitted() {
    return emitted;
  }

  private String decodeFrom(int[] ids, int end) {
    return end == emitted ? "" : tokenizer.decode(ids, emitted, end);
  }
}
