package io.gpumeter.model;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * A Hugging Face {@code tokenizer.json} (BPE, byte-level BPE, SentencePiece-style with byte
 * fallback, ...) run by the Rust {@code tokenizers} library through DJL's binding, whose jar
 * carries the native library (no download).
 *
 * <p>Contract, beyond {@link Tokenizer}'s:
 *
 * <ul>
 *   <li>{@link #encode} adds no special tokens (no BOS/EOS template), and text that spells a
 *       special token (such as {@code <|endoftext|>}) is encoded as ordinary text, never as the
 *       special id: a client cannot end or forge a sequence by typing it.
 *   <li>{@link #decode} drops special tokens. Decoding {@code tokens[from..to)} with {@code from >
 *       0} gives the text those tokens add after {@code tokens[0..from)} (it decodes them with up
 *       to 4 tokens of left context and removes the context's text), so decoders that strip a
 *       leading space of the first token (SentencePiece's metaspace) stream the same text as one
 *       decode of everything.
 *   <li>{@link #decodableEnd} holds back the trailing tokens whose text ends in U+FFFD, the sign of
 *       a UTF-8 character split over byte tokens, so a stream never shows a broken character that a
 *       later token completes; once more than 3 do (invalid bytes, not a split character), it lets
 *       out the text before the last 3 where cutting there leaves the decoded text as it is. So
 *       pieces joined equal one decode of the whole sequence, invalid bytes included.
 * </ul>
 *
 * <p>Thread-safe (the native tokenizer is immutable after loading). {@link #close} frees the native
 * tokenizer.
 */
public final class HfTokenizer implements Tokenizer, AutoCloseable {
  /** The tokenizer file in a model directory. */
  public static final String FILE_NAME = "tokenizer.json";

  private static final int CONTEXT_TOKENS = 4;
  private static final int MAX_HELD_BACK = 3;
  private static final char REPLACEMENT = '\uFFFD';
  private static final ObjectMapper MAPPER = new ObjectMapper();

  private final HuggingFaceTokenizer tokenizer;
  private final int vocabSize;
  private final Set<Integer> specialIds;

  /** Special tokens' texts, longest first, to keep them out of {@link #encode}'s ids. */
  private final List<String> specialTexts;

  private HfTokenizer(
      HuggingFaceTokenizer tokenizer,
      int vocabSize,
      Set<Integer> specialIds,
      List<String> specialTexts) {
    this.tokenizer = tokenizer;
    this.vocabSize = vocabSize;
    this.specialIds = specialIds;
    this.specialTexts = specialTexts;
  }

  /**
   * Loads {@code tokenizer.json}.
   *
   * @param vocabSize the model's logits width; every id of the tokenizer must be below it
   * @throws ModelException if the file is missing or not a tokenizer the library reads, or has ids
   *     outside {@code [0, vocabSize)}
   */
  public static HfTokenizer open(Path file, int vocabSize) {
    JsonNode root;
    try {
      root = MAPPER.readTree(Files.readString(file));
    } catch (IOException e) {
      throw new ModelException(file + ": cannot read the tokenizer: " + e.getMessage(), e);
    }
    if (root == null || !root.isObject() || !root.path("model").isObject()) {
      throw new ModelException(file + ": not a Hugging Face tokenizer.json (no 'model' object)");
    }
    int maxId = -1;
    for (JsonNode id : root.path("model").path("vocab")) {
      maxId = Math.max(maxId, id.asInt(-1));
    }
    Set<Integer> special = new TreeSet<>();
    List<String> texts = new ArrayList<>();
    for (JsonNode added : root.path("added_tokens")) {
      int id = added.path("id").asInt(-1);
      maxId = Math.max(maxId, id);
      if (added.path("special").asBoolean(false)) {
        special.add(id);
        texts.add(added.path("content").asText());
      }
    }
    if (maxId >= vocabSize) {
      throw new ModelException(
          file + ": token id " + maxId + " outside the model's vocabulary of " + vocabSize);
    }
    texts.removeIf(String::isEmpty);
    texts.sort(Comparator.comparingInt(String::length).reversed());
    HuggingFaceTokenizer tok;
    try {
      tok =
          HuggingFaceTokenizer.newInstance(
              file,
              Map.of(
                  "addSpecialTokens", "false",
                  "truncation", "false",
                  "padding", "false",
                  "cleanupTokenizationSpaces", "false"));
    } catch (IOException | RuntimeException e) {
      throw new ModelException(file + ": cannot load the tokenizer: " + e.getMessage(), e);
    }
    return new HfTokenizer(tok, vocabSize, Set.copyOf(special), List.copyOf(texts));
  }

  /** Ids of the special tokens ({@code added_tokens} marked special), dropped by decoding. */
  public Set<Integer> specialIds() {
    return specialIds;
  }

  @Override
  public int[] encode(String text) {
    int cut = firstSpecial(text);
    if (cut < 0) {
      return toInts(tokenizer.encode(text, false, false).getIds());
    }
    // split a special token's text after its first character so that it is not matched, and
    // encode the pieces: a few more tokens than the text would get unsplit, never the special id
    List<long[]> parts = new ArrayList<>();
    int start = 0;
    while (cut >= 0) {
      parts.add(tokenizer.encode(text.substring(start, cut + 1), false, false).getIds());
      start = cut + 1;
      cut = firstSpecial(text, start);
    }
    parts.add(tokenizer.encode(text.substring(start), false, false).getIds());
    int n = 0;
    for (long[] p : parts) {
      n += p.length;
    }
    int[] ids = new int[n];
    int i = 0;
    for (long[] p : parts) {
      for (long id : p) {
        ids[i++] = (int) id;
      }
    }
    return ids;
  }

  private int firstSpecial(String text) {
    return firstSpecial(text, 0);
  }

  /** Index of the first character of the first special token text at or after {@code from}. */
  private int firstSpecial(String text, int from) {
    int best = -1;
    for (String s : specialTexts) {
      int at = text.indexOf(s, from);
      if (at >= 0 && (best < 0 || at < best)) {
        best = at;
      }
    }
    return best;
  }

  @Override
  public String decode(int[] tokens, int from, int to) {
    checkRange(tokens, from, to);
    checkIds(tokens, from, to);
    if (from == to) {
      return "";
    }
    if (from == 0) {
      return decodeRaw(tokens, 0, to);
    }
    int ctx = Math.max(0, from - CONTEXT_TOKENS);
    String context = decodeRaw(tokens, ctx, from);
    String all = decodeRaw(tokens, ctx, to);
    // a context ending inside a character (U+FFFD) would not be a prefix of the whole text
    if (all.startsWith(context)
        && (context.isEmpty() || context.charAt(context.length() - 1) != REPLACEMENT)) {
      return all.substring(context.length());
    }
    return decodeRaw(tokens, from, to);
  }

  @Override
  public int decodableEnd(int[] tokens, int from, int to) {
    checkRange(tokens, from, to);
    for (int e = to; e >= from && e >= to - MAX_HELD_BACK; e--) {
      if (e == from) {
        return from;
      }
      String text = decode(tokens, from, e);
      if (text.isEmpty() || text.charAt(text.length() - 1) != REPLACEMENT) {
        return e;
      }
    }
    // the last 3 tokens may still begin a character: emit up to a point before them where the
    // text is settled, i.e. splitting there does not change the decoded text (an invalid sequence
    // that later bytes could extend, such as F0 9F 98 then C3, is not cut in two U+FFFD)
    String whole = decode(tokens, from, to);
    for (int e = to - MAX_HELD_BACK; e > from; e--) {
      if ((decode(tokens, from, e) + decode(tokens, e, to)).equals(whole)) {
        return e;
      }
    }
    return from;
  }

  @Override
  public int vocabSize() {
    return vocabSize;
  }

  @Override
  public void close() {
    tokenizer.close();
  }

  private String decodeRaw(int[] tokens, int from, int to) {
    long[] ids = new long[to - from];
    for (int i = from; i < to; i++) {
      ids[i - from] = tokens[i];
    }
    return tokenizer.decode(ids, true);
  }

  private static int[] toInts(long[] ids) {
    int[] out = new int[ids.length];
    for (int i = 0; i < ids.length; i++) {
      out[i] = (int) ids[i];
    }
    return out;
  }

  private void checkIds(int[] tokens, int from, int to) {
    for (int i = from; i < to; i++) {
      if (tokens[i] < 0 || tokens[i] >= vocabSize) {
        throw new IllegalArgumentException(
            "token id " + tokens[i] + " at index " + i + " outside vocabulary of " + vocabSize);
      }
    }
  }

  private static void checkRange(int[] tokens, int from, int to) {
    if (from < 0 || to > tokens.length || from > to) {
      throw new IndexOutOfBoundsException(
          "range [" + from + ", " + to + ") of " + tokens.length + " tokens");
    }
  }
}
