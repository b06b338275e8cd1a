package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.Iterator;

/**
 * {@code stream} and {@code stream_options}, shared by completions and chat completions.
 *
 * @param stream answer with server-sent events
 * @param includeUsage {@code stream_options.include_usage}: a last event carrying {@code usage}
 */
record StreamParams(boolean stream, boolean includeUsage) {
  static final StreamParams NONE = new StreamParams(false, false);

  /**
   * @throws ApiException 400 naming {@code stream}, {@code stream_options} or {@code
   *     stream_options.include_usage}
   */
  static StreamParams parse(JsonNode root) {
    JsonNode s = root.get("stream");
    boolean stream = false;
    if (s != null && !s.isNull()) {
      if (!s.isBoolean()) {
        throw ApiException.wrongType("stream", "a boolean", kind(s));
      }
      stream = s.booleanValue();
    }
    JsonNode o = root.get("stream_options");
    if (o == null || o.isNull()) {
      return stream ? new StreamParams(true, false) : NONE;
    }
    if (!o.isObject()) {
      throw ApiException.wrongType("stream_options", "an object", kind(o));
    }
    if (!stream) {
      throw ApiException.invalid(
          "stream_options", "'stream_options' is only allowed when 'stream' is true.");
    }
    boolean includeUsage = false;
    for (Iterator<String> it = o.fieldNames(); it.hasNext(); ) {
      String name = it.next();
      if (!name.equals("include_usage")) {
        throw ApiException.invalid(
            "stream_options." + name, "Unrecognized stream option: " + name + ".");
      }
    }
    JsonNode u = o.get("include_usage");
    if (u != null && !u.isNull()) {
      if (!u.isBoolean()) {
        throw ApiException.wrongType("stream_options.include_usage", "a boolean", kind(u));
      }
      includeUsage = u.booleanValue();
    }
    return new StreamParams(true, includeUsage);
  }

  private static String kind(JsonNode v) {
    return v.isTextual()
        ? "a string"
        : v.isNumber()
            ? "a number"
            : v.isBoolean() ? "a boolean" : v.isArray() ? "an array" : "an object";
  }
}
