package io.gpumeter.model;

/** Text to token ids and back. Thread-safe. */
public interface Tokenizer {
  /** Encodes text; never returns special tokens such as end-of-sequence. */
  int[] encode(String text);

  /**
   * Decodes {@code tokens[from..to)}; special tokens are dropped and invalid byte sequences are
   * replaced with U+FFFD.
   */
  String decode(int[] tokens, int from, int to);

  default String decode(int[] tokens) {
    return decode(tokens, 0, tokens.length);
  }

  int vocabSize();
}
