package io.gpumeter.model;

import static org.assertj.core.api.Assertions.assertThat;

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
}
