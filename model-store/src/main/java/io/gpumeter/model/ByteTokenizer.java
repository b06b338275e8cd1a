package io.gpumeter.model;

import java.nio.charset.StandardCharsets;

/**
 * Byte-level tokenizer: token ids 0..255 are the bytes of the UTF-8 encoding of the text; ids from
 * 256 up (256 is end-of-sequence in the demo model) are special and never produced by {@link
 * #encode}, and dropped by {@link #decode}. Invalid UTF-8 decodes to U+FFFD. Stateless and
 * thread-safe.
 */
public final class ByteTokenizer implements Tokenizer {
  /** Number of byte token ids. */
  public static final int BYTE_IDS = 256;

  private final int vocabSize;

  /**
   * @param vocabSize logits width of the model, at least 256 (byte ids) plus its special ids
   */
  public ByteTokenizer(int vocabSize) {
    if (vocabSize < BYTE_IDS) {
      throw new IllegalArgumentException(
          "a byte tokenizer needs a vocabulary of at least 256 ids, got " + vocabSize);
    }
    this.vocabSize = vocabSize;
  }

  @Override
  public int[] encode(String text) {
    byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
    int[] ids = new int[bytes.length];
    for (int i = 0; i < bytes.length; i++) {
      ids[i] = bytes[i] & 0xff;
    }
    return ids;
  }

  @Override
  public String decode(int[] tokens, int from, int to) {
    checkRange(tokens, from, to);
    byte[] bytes = new byte[to - from];
    int n = 0;
    for (int i = from; i < to; i++) {
      int id = tokens[i];
      if (id < 0 || id >= vocabSize) {
        throw new IllegalArgumentException(
            "token id " + id + " at index " + i + " outside vocabulary of " + vocabSize);
      }
      if (id < BYTE_IDS) {
        bytes[n++] = (byte) id;
      }
    }
    // String's UTF-8 decoder replaces malformed input with U+FFFD
    return new String(bytes, 0, n, StandardCharsets.UTF_8);
  }

  /**
   * For streaming: the end index {@code e <= to} such that {@code tokens[from..e)} does not end
   * inside a UTF-8 character that later tokens may still complete. Decoding up to {@code e} and
   * holding back the rest avoids emitting U+FFFD for a character split across steps. A tail that
   * can never become valid (more than 3 continuation bytes, a stray continuation byte) is not held
   * back.
   */
  @Override
  public int decodableEnd(int[] tokens, int from, int to) {
    checkRange(tokens, from, to);
    // walk back over at most 3 trailing bytes looking for the lead byte of an open sequence
    int i = to - 1;
    int continuation = 0;
    while (i >= from && continuation < 3) {
      int id = tokens[i];
      if (id >= BYTE_IDS || id < 0) {
        return to; // a special token ends any character
      }
      if ((id & 0xC0) == 0x80) {
        continuation++;
        i--;
        continue;
      }
      int need;
      if ((id & 0xE0) == 0xC0) {
        need = 1;
      } else if ((id & 0xF0) == 0xE0) {
        need = 2;
      } else if ((id & 0xF8) == 0xF0) {
        need = 3;
      } else {
        return to; // ASCII or invalid lead byte: nothing to wait for
      }
      return continuation < need ? i : to;
    }
    return to;
  }

  /** The byte itself for ids 0 to 255, nothing for a special id. */
  @Override
  public byte[] tokenBytes(int token) {
    if (token < 0 || token >= vocabSize) {
      throw new IllegalArgumentException(
          "token id " + token + " outside vocabulary of " + vocabSize);
    }
    return token < BYTE_IDS ? new byte[] {(byte) token} : new byte[0];
  }

  @Override
  public int vocabSize() {
    return vocabSize;
  }

  private static void checkRange(int[] tokens, int from, int to) {
    if (from < 0 || to > tokens.length || from > to) {
      throw new IndexOutOfBoundsException(
          "range [" + from + ", " + to + ") of " + tokens.length + " tokens");
    }
  }
}
