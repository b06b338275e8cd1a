package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.UnpooledByteBufAllocator;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** A pre-encoded text event is byte for byte the event the format writes for the same text. */
class TextEventTemplateTest {
  private static final ByteBufAllocator ALLOC = new UnpooledByteBufAllocator(false);

  private static final List<String> TEXTS =
      List.of(
          "",
          "hello",
          " world\n",
          "quote \" and back\\slash",
          "tab\tcr\rff\fbs\b nul\u0000 bell\u0007 esc\u001b unit\u001f del\u007f",
          "é ü ß — 日本語",
          "emoji 😀 and 👩‍👩‍👧 and 𝄞",
          "</script> & 'single' / slash",
          "\u2028\u2029 separators");

  @Test
  void completionAndChatEventsEqualTheFormatsOwnDocuments() {
    for (SseStream.Format format :
        List.of(
            new CompletionChunks("demo\"model", "cmpl-\\1", 1_700_000_000L, null),
            new ChatCompletionsEndpoint.ChatChunks("demo-byte-lm", "chatcmpl-7", 42L, null))) {
      for (int index : new int[] {0, 1, 3}) {
        TextEventTemplate t = TextEventTemplate.of(ALLOC, format, index);
        assertThat(t).as("template of %s choice %d", format.getClass(), index).isNotNull();
        for (String text : texts()) {
          assertThat(encoded(t, text)).as(text).isEqualTo(slow(format, index, text));
        }
      }
    }
  }

  @Test
  void aLoneSurrogateIsLeftToTheFormat() {
    TextEventTemplate t = TextEventTemplate.of(ALLOC, new CompletionChunks("m", "id", 1L, null), 0);
    assertThat(t.encode(ALLOC, "a\uD83D")).isNull();
    assertThat(t.encode(ALLOC, "\uDE00b")).isNull();
  }

  @Test
  void aFormatWithoutThePlainTextGetsNoTemplate() {
    SseStream.Format twice =
        new SseStream.Format() {
          @Override
          public Json.Writer opening(int index) {
            return null;
          }

          @Override
          public Json.Writer text(
              int index, String text, String finishReason, LogprobsJson.Span logprobs) {
            return g -> {
              g.writeStartObject();
              g.writeStringField("a", text);
              g.writeStringField("b", text);
              g.writeEndObject();
            };
          }

          @Override
          public Json.Writer usage(io.gpumeter.batching.GenerationResult result, Receipt receipt) {
            return null;
          }
        };
    assertThat(TextEventTemplate.of(ALLOC, twice, 0)).isNull();
  }

  /** The fixed texts and random strings over ASCII, controls, and BMP and supplementary chars. */
  private static List<String> texts() {
    List<String> all = new ArrayList<>(TEXTS);
    SplittableRandom rng = new SplittableRandom(12);
    for (int i = 0; i < 300; i++) {
      StringBuilder b = new StringBuilder();
      int len = rng.nextInt(12);
      for (int j = 0; j < len; j++) {
        switch (rng.nextInt(4)) {
          case 0 -> b.append((char) rng.nextInt(0x20));
          case 1 -> b.append((char) (0x20 + rng.nextInt(0x60)));
          case 2 -> b.append((char) (0xA0 + rng.nextInt(0xD7FF - 0xA0)));
          default -> b.appendCodePoint(0x10000 + rng.nextInt(0x10FFFF - 0x10000));
        }
      }
      all.add(b.toString());
    }
    return all;
  }

  private static String encoded(TextEventTemplate t, String text) {
    ByteBuf b = t.encode(ALLOC, text);
    try {
      return new String(ByteBufUtil.getBytes(b), java.nio.charset.StandardCharsets.UTF_8);
    } finally {
      b.release();
    }
  }

  private static String slow(SseStream.Format format, int index, String text) {
    ByteBuf b = SseStream.event(ALLOC, format.text(index, text, null, null));
    try {
      return new String(ByteBufUtil.getBytes(b), java.nio.charset.StandardCharsets.UTF_8);
    } finally {
      b.release();
    }
  }
}
