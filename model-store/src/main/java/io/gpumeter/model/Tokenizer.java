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

  /**
   * For streaming output: an index {@code e} in {@code [from, to]} such that decoding {@code
   * tokens[from..e)} now and the rest later does not split a character. The default assumes every
   * token decodes on its own.
   */
  default int decodableEnd(int[] tokens, int from, int to) {
    return to;
  }

  int vocabSize();

  /**
   * The bytes of one token's text (UTF-8), as logprobs report them; empty for a special token. A
   * token that holds only part of a character gives just its own bytes where the tokenizer knows
   * them (byte-level tokenizers); the default decodes the token alone.
   */
  default byte[] tokenBytes(int token) {
    return decode(new int[] {token}).getBytes(java.nio.charset.StandardCharsets.UTF_8);
  }
}
