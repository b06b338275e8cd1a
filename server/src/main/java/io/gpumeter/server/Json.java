package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.json.JsonMapper;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.ByteBufInputStream;
import io.netty.buffer.ByteBufOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.math.BigDecimal;

/** JSON in and out of Netty buffers, with one shared, thread-safe mapper. */
final class Json {
  /** Strict: duplicate keys and trailing content are errors, as in OpenAI's API. */
  static final JsonMapper MAPPER =
      JsonMapper.builder()
          .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
          .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
          .build();

  private static final JsonFactory FACTORY = MAPPER.getFactory();

  private Json() {}

  /** Writes a document with a streaming generator (no tree, no intermediate strings). */
  @FunctionalInterface
  interface Writer {
    void write(JsonGenerator g) throws IOException;
  }

  /** A new buffer holding the document; the caller owns (and must release) it. */
  static ByteBuf write(ByteBufAllocator alloc, Writer writer) {
    ByteBuf buf = alloc.buffer(512);
    try (OutputStream out = new ByteBufOutputStream(buf);
        JsonGenerator g = FACTORY.createGenerator(out)) {
      writer.write(g);
    } catch (IOException | RuntimeException e) {
      buf.release();
      if (e instanceof IOException io) {
        throw new UncheckedIOException(io);
      }
      throw (RuntimeException) e;
    }
    return buf;
  }

  /**
   * Parses a request body.
   *
   * @throws IOException if it is not one well-formed JSON value
   */
  static JsonNode read(ByteBuf body) throws IOException {
    try (InputStream in = new ByteBufInputStream(body.duplicate())) {
      return MAPPER.readTree(in);
    }
  }

  /**
   * Writes nanoseconds as exact milliseconds: the integer scaled by 10^-6 ({@code 1234567} → {@code
   * 1.234567}), never through floating point.
   */
  static void writeMillis(JsonGenerator g, String field, long nanos) throws IOException {
    g.writeFieldName(field);
    g.writeNumber(BigDecimal.valueOf(nanos, 6).toPlainString());
  }
}
