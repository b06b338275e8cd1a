package io.gpumeter.server;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;

/**
 * One HTTP/1.1 exchange over a plain socket that keeps what the JDK client hides: the chunked body
 * as sent and the trailer fields after its last chunk (RFC 9112, 7.1.2).
 */
final class RawChunkedHttp {
  private RawChunkedHttp() {}

  /** A response: status, head fields and trailer fields (lower-case names), the de-chunked body. */
  record Response(
      int status, Map<String, String> headers, String body, Map<String, String> trailers) {}

  /** Sends {@code POST path} with a JSON body and reads the whole (chunked) response. */
  static Response post(int port, String path, String bearer, String json, int timeoutMillis)
      throws IOException {
    byte[] body = json.getBytes(StandardCharsets.UTF_8);
    try (Socket s = new Socket("127.0.0.1", port)) {
      s.setSoTimeout(timeoutMillis);
      OutputStream out = s.getOutputStream();
      out.write(
          ("POST "
                  + path
                  + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                  + bearer
                  + "\r\nContent-Type: application/json\r\nTE: trailers\r\nConnection: close\r\n"
                  + "Content-Length: "
                  + body.length
                  + "\r\n\r\n")
              .getBytes(StandardCharsets.US_ASCII));
      out.write(body);
      out.flush();
      InputStream in = s.getInputStream();
      String statusLine = line(in);
      int status = Integer.parseInt(statusLine.split(" ")[1]);
      Map<String, String> headers = fields(in);
      if (!"chunked".equalsIgnoreCase(headers.get("transfer-encoding"))) {
        throw new IOException("not a chunked response: " + statusLine + " " + headers);
      }
      ByteArrayOutputStream content = new ByteArrayOutputStream();
      while (true) {
        String size = line(in);
        int semi = size.indexOf(';');
        int n = Integer.parseInt((semi < 0 ? size : size.substring(0, semi)).strip(), 16);
        if (n == 0) {
          break;
        }
        content.write(in.readNBytes(n));
        if (!line(in).isEmpty()) {
          throw new IOException("chunk of " + n + " bytes not followed by CRLF");
        }
      }
      Map<String, String> trailers = fields(in);
      return new Response(status, headers, content.toString(StandardCharsets.UTF_8), trailers);
    }
  }

  /** Header or trailer fields up to the empty line. */
  private static Map<String, String> fields(InputStream in) throws IOException {
    Map<String, String> out = new TreeMap<>();
    for (String l = line(in); !l.isEmpty(); l = line(in)) {
      int colon = l.indexOf(':');
      out.put(
          l.substring(0, colon).strip().toLowerCase(Locale.ROOT), l.substring(colon + 1).strip());
    }
    return out;
  }

  /** One CRLF-terminated line, without it. */
  private static String line(InputStream in) throws IOException {
    ByteArrayOutputStream b = new ByteArrayOutputStream();
    int prev = -1;
    while (true) {
      int c = in.read();
      if (c < 0) {
        throw new IOException(
            "connection closed mid-line: " + b.toString(StandardCharsets.US_ASCII));
      }
      if (prev == '\r' && c == '\n') {
        byte[] bytes = b.toByteArray();
        return new String(bytes, 0, bytes.length - 1, StandardCharsets.US_ASCII);
      }
      b.write(c);
      prev = c;
    }
  }
}
