package io.gpumeter.model;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.Arrays;
import org.junit.jupiter.api.Test;

class ByteTokenizerTest {
  private final ByteTokenizer tok = new ByteTokenizer(257);

  @Test
  void roundTripsAsciiAndMultiByteText() {
    for (String s :
        new String[] {"", "hello, world", "naïve café – 東京 🚀", "line\nbreak\ttab\u0000nul"}) {
      int[] ids = tok.encode(s);
      assertThat(java.util.Arrays.stream(ids).allMatch(id -> id >= 0 && id <= 255)).isTrue();
      assertThat(tok.decode(ids)).isEqualTo(s);
    }
    assertThat(tok.encode("é")).containsExactly(0xC3, 0xA9);
  }

  @Test
  void dropsEndOfSequenceOnDecode() {
    int[] ids = {'o', 'k', 256, '!'};
    assertThat(tok.decode(ids)).isEqualTo("ok!");
    assertThat(tok.decode(ids, 1, 3)).isEqualTo("k");
  }

  @Test
  void invalidUtf8BecomesReplacementCharacter() {
    assertThat(tok.decode(new int[] {'a', 0xFF, 'b'})).isEqualTo("a\uFFFDb");
    // a 3-byte character cut after its first two bytes
    int[] euro = tok.encode("€");
    assertThat(tok.decode(Arrays.copyOf(euro, 2))).isEqualTo("\uFFFD");
  }

  @Test
  void decodableEndHoldsBackAnIncompleteCharacter() {
    int[] ids = tok.encode("a€🚀");
    // a (1) + € (3) + 🚀 (4) = 8 bytes
    assertThat(ids).hasSize(8);
    assertThat(tok.decodableEnd(ids, 0, 8)).isEqualTo(8);
    assertThat(tok.decodableEnd(ids, 0, 7)).isEqualTo(4);
    assertThat(tok.decodableEnd(ids, 0, 5)).isEqualTo(4);
    assertThat(tok.decodableEnd(ids, 0, 3)).isEqualTo(1);
    assertThat(tok.decodableEnd(ids, 0, 1)).isEqualTo(1);
    assertThat(tok.decodableEnd(new int[] {'x', 256}, 0, 2)).isEqualTo(2);
    assertThat(tok.decodableEnd(new int[] {0xFF}, 0, 1)).isEqualTo(1);
  }

  @Test
  void rejectsIdsOutsideTheVocabulary() {
    assertThatThrownBy(() -> tok.decode(new int[] {257}))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> tok.decode(new int[] {-1}))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> new ByteTokenizer(255)).isInstanceOf(IllegalArgumentException.class);
    assertThat(tok.vocabSize()).isEqualTo(257);
  }
}
