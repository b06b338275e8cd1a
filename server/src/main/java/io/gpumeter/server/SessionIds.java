package io.gpumeter.server;

import io.netty.util.AsciiString;

/**
 * The session a completion belongs to: the {@code X-Session-Id} header, else OpenAI's {@code user}
 * body field, else the request's own id. It is stored on the charge ({@code
 * usage_records.session_id}) so the usage API can group by it.
 *
 * <p>Rule: 1 to {@value #MAX_LENGTH} characters, each one of {@code A-Z a-z 0-9 . _ : @ -} (enough
 * for UUIDs, e-mail-like user ids and {@code conv:123}; nothing that needs quoting in a URL, a CSV
 * cell or a log line). Anything else is a 400 naming the header or the field. An empty header or
 * {@code user} counts as absent.
 */
final class SessionIds {
  static final int MAX_LENGTH = 128;
  static final AsciiString X_SESSION_ID = AsciiString.cached("x-session-id");

  private SessionIds() {}

  /**
   * @param header the {@code X-Session-Id} header, or null
   * @param user the body's {@code user}, or null
   * @param requestId the request's id, used when neither is given
   * @throws ApiException 400 naming {@code X-Session-Id} or {@code user} when the one used is
   *     invalid
   */
  static String resolve(String header, String user, String requestId) {
    if (header != null && !header.isEmpty()) {
      return validate(header, "X-Session-Id");
    }
    if (user != null && !user.isEmpty()) {
      return validate(user, "user");
    }
    return requestId;
  }

  private static String validate(String value, String param) {
    if (value.length() > MAX_LENGTH) {
      throw ApiException.invalid(
          param,
          "'"
              + param
              + "' is a session id of at most "
              + MAX_LENGTH
              + " characters; got "
              + value.length()
              + ".");
    }
    for (int i = 0; i < value.length(); i++) {
      char c = value.charAt(i);
      if (!allowed(c)) {
        throw ApiException.invalid(
            param,
            "'"
                + param
                + "' may hold only the characters A-Z a-z 0-9 . _ : @ - (character "
                + (i + 1)
                + " is not one of them).");
      }
    }
    return value;
  }

  static boolean allowed(char c) {
    return (c >= 'a' && c <= 'z')
        || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9')
        || c == '.'
        || c == '_'
        || c == ':'
        || c == '@'
        || c == '-';
  }
}
