package io.gpumeter.model;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

class IncrementalDecoderTest {
  private final ByteTokenizer tokenizer = new ByteTokenizer(257);

  @Test
  void multiByteCharactersAreNeverSplitAcrossPieces() {
    String text = "a€b😀c é";
    IncrementalDecoder d = new IncrementalDecoder(tokenizer);
    List<String> pieces = new ArrayList<>();
    for (int t : tokenizer.encode(text)) {
      String p = d.add(t);
      assertThat(p).doesNotContain("\uFFFD");
      if (!p.isEmpty()) {
        pieces.add(p);
      }
    }
    pieces.add(d.flush());
    assertThat(String.join("", pieces)).isEqualTo(text);
    // the 3-byte euro sign and the 4-byte emoji each came out whole, in one piece
    assertThat(pieces).contains("€", "\uD83D\uDE00");
  }

  @Test
  void anUnfinishedCharacterAtTheEndIsFlushedAsReplacement() {
    IncrementalDecoder d = new IncrementalDecoder(tokenizer);
    assertThat(d.add('x')).isEqualTo("x");
    assertThat(d.add(0xE2)).isEmpty();
    assertThat(d.add(0x82)).isEmpty();
    assertThat(d.flush()).isEqualTo("\uFFFD");
    assertThat(d.tokenCount()).isEqualTo(3);
  }

  @Test
  void specialTokensAreDroppedAndEndACharacter() {
    IncrementalDecoder d = new IncrementalDecoder(tokenizer);
    assertThat(d.add(256)).isEmpty();
    assertThat(d.add('o')).isEqualTo("o");
    assertThat(d.flush()).isEmpty();
  }

  /**
   * The server streams through this class: on the bundled BPE model's tokenizer (byte-level, whose
   * vocabulary has no merge with a non-ASCII byte, so every multi-byte character is split over byte
   * tokens), multi-byte text comes out in pieces that never hold half a character, and the pieces
   * joined equal one decode of all the ids (leading spaces included).
   */
  @Test
  void theBpeModelsTokenizerStreamsMultiByteTextWhole() throws Exception {
    Path dir = TestModels.modelsDir().resolve(TestModels.LLAMA);
    ModelConfig config = ModelConfigs.read(dir);
    try (HfTokenizer tok =
        HfTokenizer.open(dir.resolve(HfTokenizer.FILE_NAME), config.vocabSize())) {
      for (String text : HfTokenizerTest.TEXTS) {
        int[] ids = tok.encode(text);
        IncrementalDecoder d = new IncrementalDecoder(tok);
        StringBuilder joined = new StringBuilder();
        int heldBack = 0;
        for (int id : ids) {
          String piece = d.add(id);
          assertThat(piece).as("piece of %s", text).doesNotContain("\uFFFD");
          heldBack += piece.isEmpty() ? 1 : 0;
          joined.append(piece);
        }
        joined.append(d.flush());
        assertThat(joined.toString()).isEqualTo(text).isEqualTo(tok.decode(ids));
        if (text.startsWith("caf")) {
          // é, ï, —, 中, 文 and 😀: 2 to 4 byte tokens each, all but the last held back
          assertThat(heldBack).isGreaterThanOrEqualTo(1 + 1 + 2 + 2 + 2 + 3);
        }
      }
    }
  }

  /**
   * Invalid UTF-8 too (as sampling can produce: lead bytes without their continuation, stray
   * continuation bytes, a 4-byte start cut short by another lead byte): whatever the byte tokens,
   * the pieces joined equal one decode of all the ids, so a streamed completion never differs from
   * the same completion unstreamed (runs of U+FFFD included).
   */
  @Test
  void anyByteTokensOfTheBpeModelStreamAsTheirWholeDecode() throws Exception {
    Path dir = TestModels.modelsDir().resolve(TestModels.LLAMA);
    ModelConfig config = ModelConfigs.read(dir);
    try (HfTokenizer tok =
        HfTokenizer.open(dir.resolve(HfTokenizer.FILE_NAME), config.vocabSize())) {
      int[] bytes = {'a', ' ', 0xC3, 0xA9, 0xE4, 0xB8, 0xAD, 0xF0, 0x9F, 0x98, 0x80, 0xFF};
      int[] byteToken = new int[bytes.length];
      for (int i = 0; i < bytes.length; i++) {
        byteToken[i] = tokenOfByte(dir.resolve(HfTokenizer.FILE_NAME), bytes[i]);
      }
      java.util.Random random = new java.util.Random(13);
      for (int round = 0; round < 300; round++) {
        int[] ids = new int[1 + random.nextInt(14)];
        for (int i = 0; i < ids.length; i++) {
          ids[i] = byteToken[random.nextInt(bytes.length)];
        }
        IncrementalDecoder d = new IncrementalDecoder(tok);
        StringBuilder joined = new StringBuilder();
        for (int id : ids) {
          joined.append(d.add(id));
        }
        joined.append(d.flush());
        assertThat(joined.toString())
            .as("ids %s", java.util.Arrays.toString(ids))
            .isEqualTo(tok.decode(ids));
      }
    }
  }

  /**
   * The id of the byte-level token that is the single byte {@code b}: GPT-2's byte-to-character
   * table (printable Latin-1 bytes stand for themselves, the others for 256 + their rank), looked
   * up in the tokenizer file's vocabulary.
   */
  private static int tokenOfByte(Path tokenizerJson, int b) throws java.io.IOException {
    int rank = 0;
    int ch = -1;
    for (int x = 0; x < 256; x++) {
      boolean printable =
          (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF);
      int c = printable ? x : 256 + rank++;
      if (x == b) {
        ch = c;
      }
    }
    com.fasterxml.jackson.databind.JsonNode vocab =
        new com.fasterxml.jackson.databind.ObjectMapper()
            .readTree(tokenizerJson.toFile())
            .get("model")
            .get("vocab");
    return vocab.get(new String(Character.toChars(ch))).asInt();
  }
}
