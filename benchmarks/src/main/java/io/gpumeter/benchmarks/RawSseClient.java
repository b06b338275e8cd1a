package io.gpumeter.benchmarks;

import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Locale;

/**
 * The cheapest fair load client for {@link StreamingThroughput}: one blocking keep-alive HTTP/1.1
 * socket, requests written by hand, the response read byte by byte. A streamed answer's chunked
 * body is split into server-sent events by their {@code \n\n} ends and each event is only
 * classified by a byte search (text with something in it, {@code [DONE]}, or usage), never decoded
 * or parsed as JSON; the one usage event is parsed for {@code completion_tokens} (and checked to be
 * there). So the client costs a few byte scans per event, and the streaming/non-streaming ratio
 * measures the server rather than the client. Not thread-safe: one per client thread.
 */
final class RawSseClient implements AutoCloseable {
  private static final byte[] EMPTY_TEXT = "\"text\":\"\"".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] TEXT = "\"text\":\"".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] USAGE = "\"usage\"".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] DONE = "data: [DONE]".getBytes(StandardCharsets.US_ASCII);

  /** Sees the arrival of each event that carries text ({@link System#nanoTime}). */
  interface TextEvents {
    void onText(long nanos);
  }

  private final int port;
  private Socket socket;
  private InputStream in;
  private OutputStream out;
  private byte[] buf = new byte[8192];

  RawSseClient(int port) {
    this.port = port;
  }

  /**
   * {@code POST /v1/completions} with {@code body}; returns the answer's {@code completion_tokens}
   * (from the usage event when streamed).
   *
   * @throws IOException if the connection fails or the answer is not a 200 with usage
   */
  long post(String key, String body, boolean stream, TextEvents events) throws IOException {
    if (socket == null) {
      socket = new Socket();
      socket.setTcpNoDelay(true);
      socket.connect(new InetSocketAddress("127.0.0.1", port), 10_000);
      in = new BufferedInputStream(socket.getInputStream(), 16384);
      out = socket.getOutputStream();
    }
    byte[] payload = body.getBytes(StandardCharsets.UTF_8);
    String head =
        "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + key
            + "\r\nContent-Type: application/json\r\nContent-Length: "
            + payload.length
            + "\r\n\r\n";
    out.write(head.getBytes(StandardCharsets.US_ASCII));
    out.write(payload);
    out.flush();
    String status = line();
    if (!status.startsWith("HTTP/1.1 200")) {
      close();
      throw new IOException("answer " + status);
    }
    long length = -1;
    boolean chunked = false;
    boolean closes = false;
    for (String h; !(h = line()).isEmpty(); ) {
      String lower = h.toLowerCase(Locale.ROOT);
      if (lower.startsWith("content-length:")) {
        length = Long.parseLong(lower.substring(15).trim());
      } else if (lower.startsWith("transfer-encoding:") && lower.contains("chunked")) {
        chunked = true;
      } else if (lower.startsWith("connection:") && lower.contains("close")) {
        closes = true;
      }
    }
    long tokens;
    if (!chunked) {
      byte[] whole = in.readNBytes((int) length);
      tokens = ServerThroughput.completionTokens(new String(whole, StandardCharsets.UTF_8));
    } else {
      tokens = readEvents(stream, events);
    }
    if (closes) {
      close();
    }
    return tokens;
  }

  /** Reads a chunked body to its end, splitting it into events; returns the usage's tokens. */
  private long readEvents(boolean stream, TextEvents events) throws IOException {
    int filled = 0; // bytes of an event not ended yet at buf[0..filled)
    long tokens = -1;
    boolean done = false;
    while (true) {
      int size = Integer.parseInt(chunkSize(line()), 16);
      if (size == 0) {
        while (!line().isEmpty()) {
          // trailers (the receipt): not measured
        }
        break;
      }
      if (filled + size > buf.length) {
        buf = Arrays.copyOf(buf, Math.max(buf.length * 2, filled + size));
      }
      int from = Math.max(0, filled - 1);
      readFully(buf, filled, size);
      filled += size;
      line(); // the chunk's CRLF
      int start = 0;
      for (int i = from; i + 1 < filled; i++) {
        if (buf[i] == '\n' && buf[i + 1] == '\n') {
          int end = i;
          if (startsWith(buf, start, end, DONE)) {
            done = true;
          } else if (indexOf(buf, start, end, USAGE) >= 0) {
            tokens =
                ServerThroughput.completionTokens(
                    new String(buf, start, end - start, StandardCharsets.UTF_8));
          } else if (indexOf(buf, start, end, TEXT) >= 0
              && indexOf(buf, start, end, EMPTY_TEXT) < 0) {
            events.onText(System.nanoTime());
          }
          start = i + 2;
          i++;
        }
      }
      System.arraycopy(buf, start, buf, 0, filled - start);
      filled -= start;
    }
    if (stream && (!done || tokens < 0)) {
      throw new IOException("stream ended without usage and [DONE]");
    }
    return tokens;
  }

  private static String chunkSize(String line) {
    int semi = line.indexOf(';');
    return (semi < 0 ? line : line.substring(0, semi)).trim();
  }

  private void readFully(byte[] b, int off, int len) throws IOException {
    int n = in.readNBytes(b, off, len);
    if (n < len) {
      throw new IOException("connection closed inside a chunk");
    }
  }

  private final ByteArrayOutputStream lineBuf = new ByteArrayOutputStream(128);

  /** One CRLF-ended line, without its end. */
  private String line() throws IOException {
    lineBuf.reset();
    int c;
    while ((c = in.read()) >= 0) {
      if (c == '\n') {
        String s = lineBuf.toString(StandardCharsets.US_ASCII);
        return s.endsWith("\r") ? s.substring(0, s.length() - 1) : s;
      }
      lineBuf.write(c);
    }
    throw new IOException("connection closed");
  }

  private static boolean startsWith(byte[] b, int from, int to, byte[] what) {
    if (to - from < what.length) {
      return false;
    }
    for (int i = 0; i < what.length; i++) {
      if (b[from + i] != what[i]) {
        return false;
      }
    }
    return true;
  }

  private static int indexOf(byte[] b, int from, int to, byte[] what) {
    outer:
    for (int i = from; i + what.length <= to; i++) {
      for (int j = 0; j < what.length; j++) {
        if (b[i + j] != what[j]) {
          continue outer;
        }
      }
      return i;
    }
    return -1;
  }

  @Override
  public void close() {
    if (socket != null) {
      try {
        socket.close();
      } catch (IOException e) {
        // closing anyway
      }
      socket = null;
    }
  }
}
