package io.gpumeter.server;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.ByteBufUtil;
import java.nio.charset.StandardCharsets;

/**
 * The bytes of one choice's plain text event ({@code data: {chunk}\n\n} with no logprobs and no
 * finish reason), encoded once per stream: everything before and after the text's JSON string is
 * kept as bytes, so a streamed token costs one buffer, two copies and the escaping of its text
 * instead of a JSON generator and a whole document (issue 12 item 8).
 *
 * <p>The template is cut out of the format's own document ({@link SseStream.Format#text}) written
 * with a marker text, so a templated event is byte for byte the event the format writes (checked by
 * {@code TextEventTemplateTest}); the text is escaped as Jackson escapes it (a character outside
 * the BMP as its two escaped UTF-16 halves).
 */
final class TextEventTemplate {
  /** The marker's JSON string as Jackson writes it: a string holding one NUL. */
  private static final byte[] MARKER = "\"\\u0000\"".getBytes(StandardCharsets.US_ASCII);

  private static final byte[] HEX = "0123456789ABCDEF".getBytes(StandardCharsets.US_ASCII);

  private final byte[] prefix;
  private final byte[] suffix;

  private TextEventTemplate(byte[] prefix, byte[] suffix) {
    this.prefix = prefix;
    this.suffix = suffix;
  }

  /**
   * The template of choice {@code index}'s text events in {@code format}; null when the format's
   * document does not hold the text exactly once as a plain string (the caller then writes whole
   * documents).
   */
  static TextEventTemplate of(ByteBufAllocator alloc, SseStream.Format format, int index) {
    ByteBuf event = SseStream.event(alloc, format.text(index, "\u0000", null, null));
    try {
      byte[] bytes = ByteBufUtil.getBytes(event);
      int at = indexOf(bytes, MARKER, 0);
      if (at < 0 || indexOf(bytes, MARKER, at + 1) >= 0) {
        return null;
      }
      byte[] prefix = new byte[at];
      System.arraycopy(bytes, 0, prefix, 0, at);
      int rest = at + MARKER.length;
      byte[] suffix = new byte[bytes.length - rest];
      System.arraycopy(bytes, rest, suffix, 0, suffix.length);
      return new TextEventTemplate(prefix, suffix);
    } finally {
      event.release();
    }
  }

  /**
   * A new buffer holding the event for {@code text} (the caller owns it); null when the text holds
   * a lone surrogate (not valid UTF-8: the caller writes it through the format, as before).
   */
  ByteBuf encode(ByteBufAllocator alloc, String text) {
    int n = text.length();
    ByteBuf buf = alloc.buffer(prefix.length + suffix.length + 2 + 3 * n);
    buf.writeBytes(prefix);
    buf.writeByte('"');
    int run = 0; // start of the characters not yet written that need no escape
    for (int i = 0; i < n; i++) {
      char c = text.charAt(i);
      if (c < 0x20 || c == '"' || c == '\\') {
        ByteBufUtil.writeUtf8(buf, text, run, i);
        escape(buf, c);
        run = i + 1;
      } else if (Character.isSurrogate(c)) {
        if (!Character.isHighSurrogate(c)
            || i + 1 == n
            || !Character.isLowSurrogate(text.charAt(i + 1))) {
          buf.release();
          return null;
        }
        // Jackson writes a character outside the BMP as its two escaped UTF-16 halves.
        ByteBufUtil.writeUtf8(buf, text, run, i);
        escape(buf, c);
        escape(buf, text.charAt(++i));
        run = i + 1;
      }
    }
    ByteBufUtil.writeUtf8(buf, text, run, n);
    buf.writeByte('"');
    buf.writeBytes(suffix);
    return buf;
  }

  /** Jackson's escapes: the short ones where JSON has them, else backslash, u, four hex digits. */
  private static void escape(ByteBuf buf, char c) {
    buf.writeByte('\\');
    switch (c) {
      case '"' -> buf.writeByte('"');
      case '\\' -> buf.writeByte('\\');
      case '\n' -> buf.writeByte('n');
      case '\r' -> buf.writeByte('r');
      case '\t' -> buf.writeByte('t');
      case '\b' -> buf.writeByte('b');
      case '\f' -> buf.writeByte('f');
      default -> {
        buf.writeByte('u');
        buf.writeByte(HEX[c >> 12]);
        buf.writeByte(HEX[(c >> 8) & 0xF]);
        buf.writeByte(HEX[(c >> 4) & 0xF]);
        buf.writeByte(HEX[c & 0xF]);
      }
    }
  }

  private static int indexOf(byte[] bytes, byte[] part, int from) {
    outer:
    for (int i = from; i + part.length <= bytes.length; i++) {
      for (int j = 0; j < part.length; j++) {
        if (bytes[i + j] != part[j]) {
          continue outer;
        }
      }
      return i;
    }
    return -1;
  }
}
