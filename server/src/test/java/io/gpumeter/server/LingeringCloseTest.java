package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

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
}
