package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.gpumeter.batching.StepListener;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The close timings server/README.md promises ("Connections"): a response that closes its
 * connection is not destroyed by a reset although the client is still sending, and the server
 * closes it after {@link ApiHandler#LINGER_MILLIS} when the client does not; a connection refused
 * over a cap is closed after {@link ConnectionLimiter#LINGER_MILLIS}. Upper bounds carry slack for
 * a loaded machine ({@link #SLACK}).
 */
@Timeout(120)
class LingeringCloseTest {
  static final Duration SLACK = Duration.ofSeconds(8);
  static GpumeterServer server;

  @BeforeAll
  static void start() throws Exception {
    server = GpumeterServer.start(TestServers.config("linger").build(), StepListener.NONE);
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  static Socket connect(String from) throws IOException {
    Socket s = new Socket();
    s.bind(new InetSocketAddress(from, 0));
    s.connect(new InetSocketAddress("127.0.0.1", server.port()), 10_000);
    s.setSoTimeout(30_000);
    return s;
  }

  /** Everything until end of stream. */
  static String readToEnd(InputStream in) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    in.transferTo(out);
    return out.toString(StandardCharsets.ISO_8859_1);
  }

  /**
   * Writes junk until a write fails (the server closed the connection and the kernel answered with
   * a reset) and returns when that was, on {@link System#nanoTime()}.
   */
  static CompletableFuture<Long> writeUntilRefused(Socket s) {
    return CompletableFuture.supplyAsync(
        () -> {
          // More requests pipelined behind the closing one: read and dropped, never answered.
          byte[] junk =
              "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".getBytes(StandardCharsets.US_ASCII);
          long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
          try {
            OutputStream out = s.getOutputStream();
            while (System.nanoTime() < deadline) {
              out.write(junk);
              out.flush();
              // Paced so that a reset from the server is seen between two writes.
              java.util.concurrent.locks.LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(5));
            }
            throw new IllegalStateException("the server never closed the connection");
          } catch (IOException e) {
            return System.nanoTime();
          }
        });
  }

  @Test
  void aClosingResponseSurvivesAClientStillSendingAndTheServerClosesWithinTheLinger()
      throws Exception {
    try (Socket s = connect("127.0.0.1")) {
      s.getOutputStream()
          .write(
              ("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                  .getBytes(StandardCharsets.US_ASCII));
      // The client keeps sending after its request: closing with that input unread would make
      // the kernel reset the connection, which can destroy the response before it is read.
      CompletableFuture<Long> refusedAt = writeUntilRefused(s);
      String response = readToEnd(s.getInputStream());
      long endOfStream = System.nanoTime();
      assertThat(response).startsWith("HTTP/1.1 200 ").endsWith("{\"status\":\"ok\"}");
      long closedAfter = refusedAt.get(60, TimeUnit.SECONDS) - endOfStream;
      assertThat(Duration.ofNanos(closedAfter))
          .as("closed after the %d ms linger, without the client's FIN", ApiHandler.LINGER_MILLIS)
          .isLessThan(Duration.ofMillis(ApiHandler.LINGER_MILLIS).plus(SLACK));
    }
  }

  /**
   * A client that half-closes (FIN) right after a keep-alive request, while the generation runs,
   * gets the whole answer, then end of stream, and the server closes the connection: the FIN ended
   * the keep-alive (the idle timeout, 120 s here, is not what closes it).
   */
  @Test
  void aHalfClosedClientGetsItsAnswerAndTheFinEndsTheKeepAlive() throws Exception {
    await().atMost(10, TimeUnit.SECONDS).until(() -> server.openConnections() == 0);
    String key = server.billing().apiKeys().create("half-close").plaintext();
    String body = "{\"model\":\"demo-byte-lm\",\"prompt\":\"Half \",\"max_tokens\":8}";
    try (Socket s = connect("127.0.0.1")) {
      s.getOutputStream()
          .write(
              ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + key
                      + "\r\nContent-Type: application/json\r\nContent-Length: "
                      + body.length()
                      + "\r\n\r\n"
                      + body)
                  .getBytes(StandardCharsets.US_ASCII));
      s.shutdownOutput();
      String response = readToEnd(s.getInputStream()); // soTimeout 30 s: far below the idle timeout
      assertThat(response)
          .startsWith("HTTP/1.1 200 ")
          .contains("\"object\":\"text_completion\"")
          .endsWith("}");
      await("the server to close the half-closed connection")
          .atMost(10, TimeUnit.SECONDS)
          .until(() -> server.openConnections() == 0);
    }
  }

  /**
   * A FIN from the client ends the linger of a closing response at once: the server does not hold
   * the connection for the rest of {@link ApiHandler#LINGER_MILLIS}. Measured from the FIN, the
   * bound is half the linger (the linger started before the FIN, when the response was written, so
   * a linger-timed close would come just under {@code LINGER_MILLIS} after it).
   */
  @Test
  void aFinFromTheClientEndsTheLingerAtOnce() throws Exception {
    await().atMost(10, TimeUnit.SECONDS).until(() -> server.openConnections() == 0);
    try (Socket s = connect("127.0.0.1")) {
      s.getOutputStream()
          .write(
              "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  .getBytes(StandardCharsets.US_ASCII));
      String response = readToEnd(s.getInputStream()); // the server shut down its output
      assertThat(response).startsWith("HTTP/1.1 200 ").endsWith("{\"status\":\"ok\"}");
      long fin = System.nanoTime();
      s.shutdownOutput();
      await("the server to close once the client's FIN arrives")
          .atMost(Duration.ofSeconds(30))
          .until(() -> server.openConnections() == 0);
      assertThat(Duration.ofNanos(System.nanoTime() - fin))
          .isLessThan(Duration.ofMillis(ApiHandler.LINGER_MILLIS / 2));
    }
  }
}
