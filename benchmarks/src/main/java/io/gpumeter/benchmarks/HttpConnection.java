package io.gpumeter.benchmarks;

import java.io.BufferedInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Locale;

/**
 * One HTTP/1.1 keep-alive connection with blocking I/O, for load tools that must know exactly which
 * connections exist (the JDK's {@code HttpClient} opens one per concurrent request and keeps them
 * in a pool it never closes in Java 17, which shows up in a heap measurement). Not thread-safe: one
 * thread per connection.
 *
 * <p>Only what the gpumeter server sends is understood: a status line, headers, and a body framed
 * by {@code Content-Length} (the server sets it on every response). The headers a load test checks
 * are kept: {@code x-request-id}, {@code Retry-After}, {@code Connection}. A response without
 * {@code Content-Length}, or chunked, is an {@link IOException}.
 *
 * <p>A connection the server closed while it was idle (an idle timeout) is noticed as an end of
 * stream before the first byte of the response; {@link #exchange} then reconnects and sends again
 * once, but only if the connection had been idle for at least {@link #STALE_AFTER_NANOS} (or the
 * time given to the constructor): a request on a busy connection answered with nothing is a dropped
 * request, not a stale connection, and is reported as an {@link IOException}.
 */
final class HttpConnection implements AutoCloseable {
  /** A connection idle this long may have been closed by the server in between. */
  static final long STALE_AFTER_NANOS = 1_000_000_000L;

  private final String host;
  private final int port;
  private final int readTimeoutMs;
  private final long staleAfterNanos;
  private Socket socket;
  private InputStream in;
  private OutputStream out;
  private long idleSince;
  private long reconnects;
  private byte[] body = new byte[8192];
  private final StringBuilder line = new StringBuilder(128);
  private boolean responseStarted;
  private SocketException endedBy;

  // the last response
  private int status;
  private int bodyLength;
  private String requestId;
  private String retryAfter;
  private boolean closeAfter;

  HttpConnection(String host, int port, int readTimeoutMs) {
    this(host, port, readTimeoutMs, STALE_AFTER_NANOS);
  }

  HttpConnection(String host, int port, int readTimeoutMs, long staleAfterNanos) {
    this.host = host;
    this.port = port;
    this.readTimeoutMs = readTimeoutMs;
    this.staleAfterNanos = staleAfterNanos;
  }

  /** Opens the connection now (otherwise the first exchange does). */
  HttpConnection open() throws IOException {
    if (socket == null) {
      Socket s = new Socket();
      s.setTcpNoDelay(true);
      s.setSoTimeout(readTimeoutMs);
      s.connect(new InetSocketAddress(host, port), readTimeoutMs);
      socket = s;
      in = new BufferedInputStream(s.getInputStream(), 8192);
      out = s.getOutputStream();
      idleSince = System.nanoTime();
    }
    return this;
  }

  /**
   * Sends one complete request (head and body) and reads the whole response; afterwards {@link
   * #status()} and the other accessors describe it.
   *
   * @throws IOException if the connection fails or the server closes it without a response
   */
  void exchange(byte[] request) throws IOException {
    boolean fresh = socket == null;
    open();
    boolean mayBeStale = !fresh && System.nanoTime() - idleSince >= staleAfterNanos;
    try {
      if (!attempt(request)) {
        if (!mayBeStale) {
          throw new EOFException("connection closed by the server without a response" + cause());
        }
        closeQuietly();
        reconnects++;
        open();
        if (!attempt(request)) {
          throw new EOFException("connection closed by the server without a response" + cause());
        }
      }
    } catch (IOException e) {
      closeQuietly();
      throw e;
    }
    idleSince = System.nanoTime();
    if (closeAfter) {
      closeQuietly(); // the next exchange opens a new one
    }
  }

  /**
   * Sends and reads; false when the connection ended (closed, reset, broken pipe) before the first
   * byte of a response, which on a connection idle for long is the server's idle timeout.
   */
  private boolean attempt(byte[] request) throws IOException {
    responseStarted = false;
    endedBy = null;
    try {
      out.write(request);
      out.flush();
      return readResponse();
    } catch (SocketException e) {
      if (responseStarted) {
        throw e;
      }
      endedBy = e;
      return false;
    }
  }

  private String cause() {
    return endedBy == null ? "" : " (" + endedBy.getMessage() + ")";
  }

  /** Returns false on an end of stream before the first byte of the status line. */
  private boolean readResponse() throws IOException {
    status = 0;
    bodyLength = 0;
    requestId = null;
    retryAfter = null;
    closeAfter = false;
    int first = in.read();
    if (first < 0) {
      return false;
    }
    responseStarted = true;
    line.setLength(0);
    line.append((char) first);
    String statusLine = readLine(true);
    // "HTTP/1.1 429 Too Many Requests"
    int sp = statusLine.indexOf(' ');
    if (!statusLine.startsWith("HTTP/1.") || sp < 0 || statusLine.length() < sp + 4) {
      throw new IOException("not an HTTP/1.x status line: " + statusLine);
    }
    status = Integer.parseInt(statusLine.substring(sp + 1, sp + 4));
    int contentLength = -1;
    while (true) {
      line.setLength(0);
      String h = readLine(false);
      if (h.isEmpty()) {
        break;
      }
      int colon = h.indexOf(':');
      if (colon <= 0) {
        throw new IOException("bad header line: " + h);
      }
      String name = h.substring(0, colon).trim().toLowerCase(Locale.ROOT);
      String value = h.substring(colon + 1).trim();
      switch (name) {
        case "content-length" -> contentLength = Integer.parseInt(value);
        case "x-request-id" -> requestId = value;
        case "retry-after" -> retryAfter = value;
        case "connection" -> closeAfter = value.equalsIgnoreCase("close");
        case "transfer-encoding" -> throw new IOException("unexpected transfer-encoding " + value);
        default -> {
          // not needed
        }
      }
    }
    if (contentLength < 0) {
      throw new IOException("response " + status + " without Content-Length");
    }
    if (body.length < contentLength) {
      body = Arrays.copyOf(body, Math.max(contentLength, body.length * 2));
    }
    int at = 0;
    while (at < contentLength) {
      int n = in.read(body, at, contentLength - at);
      if (n < 0) {
        throw new EOFException("response body cut off at " + at + " of " + contentLength);
      }
      at += n;
    }
    bodyLength = contentLength;
    return true;
  }

  /** Reads up to CRLF into {@link #line} (which may hold a first character already). */
  private String readLine(boolean started) throws IOException {
    if (!started) {
      line.setLength(0);
    }
    while (true) {
      int c = in.read();
      if (c < 0) {
        throw new EOFException("connection closed inside the response head");
      }
      if (c == '\n') {
        int len = line.length();
        if (len > 0 && line.charAt(len - 1) == '\r') {
          line.setLength(len - 1);
        }
        return line.toString();
      }
      if (line.length() > 16_384) {
        throw new IOException("response header line too long");
      }
      line.append((char) c);
    }
  }

  int status() {
    return status;
  }

  /** The {@code x-request-id} header of the last response, or null. */
  String requestId() {
    return requestId;
  }

  /** The {@code Retry-After} header of the last response, or null. */
  String retryAfter() {
    return retryAfter;
  }

  /** The last response's body as text (allocates). */
  String bodyText() {
    return new String(body, 0, bodyLength, StandardCharsets.UTF_8);
  }

  /**
   * The integer value of JSON field {@code field} in the last body (first occurrence, no JSON tree,
   * no allocation), or {@code missing} when the field is absent.
   */
  long longField(byte[] field, long missing) {
    int at = indexOf(body, bodyLength, field);
    if (at < 0) {
      return missing;
    }
    int i = at + field.length;
    while (i < bodyLength && (body[i] == ' ' || body[i] == ':')) {
      i++;
    }
    boolean negative = i < bodyLength && body[i] == '-';
    if (negative) {
      i++;
    }
    long v = 0;
    int digits = 0;
    while (i < bodyLength && body[i] >= '0' && body[i] <= '9') {
      v = Math.addExact(Math.multiplyExact(v, 10), body[i++] - '0');
      digits++;
    }
    if (digits == 0) {
      return missing;
    }
    return negative ? -v : v;
  }

  /** {@code "field"} quoted as it appears in JSON, as bytes, for {@link #longField}. */
  static byte[] jsonName(String field) {
    return ("\"" + field + "\"").getBytes(StandardCharsets.US_ASCII);
  }

  private static int indexOf(byte[] hay, int len, byte[] needle) {
    outer:
    for (int i = 0; i + needle.length <= len; i++) {
      for (int j = 0; j < needle.length; j++) {
        if (hay[i + j] != needle[j]) {
          continue outer;
        }
      }
      return i;
    }
    return -1;
  }

  /** Times this connection found itself closed by the server while idle and reconnected. */
  long reconnects() {
    return reconnects;
  }

  private void closeQuietly() {
    Socket s = socket;
    socket = null;
    in = null;
    out = null;
    if (s != null) {
      try {
        s.close();
      } catch (IOException e) {
        // closing anyway
      }
    }
  }

  @Override
  public void close() {
    closeQuietly();
  }
}
