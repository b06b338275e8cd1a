package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.gpumeter.batching.StepListener;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * {@code http.max_connections}, {@code http.max_connections_per_address} and {@code
 * http.idle_timeout} on a real server. Clients bind distinct loopback addresses (127.0.0.x, all
 * local on Linux) to count as distinct client addresses.
 */
@Timeout(value = 3, unit = TimeUnit.MINUTES)
class ConnectionLimitsTest {
  private static final int TOTAL = 6;
  private static final int PER_ADDRESS = 3;

  private static GpumeterServer server;
  private final List<Socket> open = new ArrayList<>();

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            TestServers.config("limits")
                .set("http.max_connections", Integer.toString(TOTAL))
                .set("http.max_connections_per_address", Integer.toString(PER_ADDRESS))
                .set("http.idle_timeout", "2s")
                .build(),
            StepListener.NONE);
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  @AfterEach
  void closeAll() throws IOException {
    for (Socket s : open) {
      s.close();
    }
    open.clear();
  }

  @BeforeEach
  void noConnectionsLeft() {
    // the previous test's connections are closed, and the server has counted them out
    await().atMost(10, TimeUnit.SECONDS).until(() -> server.openConnections() == 0);
  }

  private Socket connect(String from) throws IOException {
    Socket s = new Socket();
    s.bind(new InetSocketAddress(from, 0));
    s.connect(new InetSocketAddress("127.0.0.1", server.port()), 10_000);
    s.setSoTimeout(30_000);
    open.add(s);
    return s;
  }

  /** One keep-alive request on {@code s}; returns the status line and headers and body read. */
  private static String healthz(Socket s) throws IOException {
    s.getOutputStream()
        .write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
    return readResponse(s.getInputStream());
  }

  /** Reads one response whose body is JSON ending in "}" (enough for these small answers). */
  private static String readResponse(InputStream in) throws IOException {
    StringBuilder sb = new StringBuilder();
    int c;
    int depth = 0;
    boolean inBody = false;
    while ((c = in.read()) >= 0) {
      sb.append((char) c);
      if (!inBody && sb.toString().endsWith("\r\n\r\n")) {
        inBody = true;
      } else if (inBody && c == '{') {
        depth++;
      } else if (inBody && c == '}' && --depth == 0) {
        break;
      }
    }
    return sb.toString();
  }

  private static void assertRefused(String response) {
    assertThat(response)
        .startsWith("HTTP/1.1 503 ")
        .contains("Retry-After: 1")
        .contains("Connection: close")
        .contains("\"code\":\"too_many_connections\"");
  }

  /** The refused connection is closed by the server after its 503. */
  private static void assertClosedByServer(Socket s) throws IOException {
    s.setSoTimeout(10_000);
    try {
      assertThat(s.getInputStream().read()).isEqualTo(-1);
    } catch (SocketTimeoutException e) {
      throw new AssertionError("the server did not close a refused connection", e);
    }
  }

  @Test
  void perAddressCapRefusesWith503ThenFreesAtClose() throws Exception {
    for (int i = 0; i < PER_ADDRESS; i++) {
      assertThat(healthz(connect("127.0.0.2"))).startsWith("HTTP/1.1 200 ");
    }
    Socket over = connect("127.0.0.2");
    assertRefused(readResponse(over.getInputStream()));
    assertClosedByServer(over);
    // another address is not affected
    assertThat(healthz(connect("127.0.0.3"))).startsWith("HTTP/1.1 200 ");
    // once one closes, the address may connect again
    open.get(0).close();
    await()
        .atMost(10, TimeUnit.SECONDS)
        .untilAsserted(
            () -> {
              Socket again = connect("127.0.0.2");
              assertThat(healthz(again)).startsWith("HTTP/1.1 200 ");
            });
  }

  @Test
  void totalCapRefusesWith503() throws Exception {
    int accepted = 0;
    String refusal = null;
    for (int i = 0; i < TOTAL + 1 && refusal == null; i++) {
      Socket s = connect("127.0.0." + (10 + i)); // one per address: only the total applies
      String r = i < TOTAL ? healthz(s) : readResponse(s.getInputStream());
      if (r.startsWith("HTTP/1.1 200 ")) {
        accepted++;
      } else {
        refusal = r;
      }
    }
    assertThat(accepted).isEqualTo(TOTAL);
    assertThat(refusal).isNotNull();
    assertRefused(refusal);
  }

  /**
   * A refused client that keeps sending (a request body still on its way, more pipelined requests)
   * reads the whole 503, then end of stream, and the server closes the connection about {@link
   * ConnectionLimiter#LINGER_MILLIS} after accepting it: the client's next write fails.
   */
  @Test
  void aRefusedClientThatKeepsSendingReadsThe503AndIsClosedWithinTheLinger() throws Exception {
    for (int i = 0; i < PER_ADDRESS; i++) {
      assertThat(healthz(connect("127.0.0.4"))).startsWith("HTTP/1.1 200 ");
    }
    // paced pipelined requests, then a client that writes as fast as it can
    for (boolean flood : new boolean[] {false, true}) {
      Socket over = connect("127.0.0.4");
      long connectedAt = System.nanoTime();
      CompletableFuture<Long> refusedAt =
          flood ? floodUntilRefused(over) : LingeringCloseTest.writeUntilRefused(over);
      String response = LingeringCloseTest.readToEnd(over.getInputStream());
      assertRefused(response);
      assertThat(response).as("flood=%s", flood).endsWith("}");
      long closedAfter = refusedAt.get(60, TimeUnit.SECONDS) - connectedAt;
      assertThat(Duration.ofNanos(closedAfter))
          .as("flood=%s: closed %d ms after accept", flood, ConnectionLimiter.LINGER_MILLIS)
          .isLessThan(
              Duration.ofMillis(ConnectionLimiter.LINGER_MILLIS).plus(LingeringCloseTest.SLACK));
    }
  }

  /** Writes 64 KiB blocks without pause until a write fails; returns when, on nanoTime. */
  private static CompletableFuture<Long> floodUntilRefused(Socket s) {
    return CompletableFuture.supplyAsync(
        () -> {
          byte[] block = new byte[64 * 1024];
          java.util.Arrays.fill(block, (byte) 'x');
          long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
          try {
            OutputStream out = s.getOutputStream();
            while (System.nanoTime() < deadline) {
              out.write(block);
            }
            throw new IllegalStateException("the server never closed the connection");
          } catch (IOException e) {
            return System.nanoTime();
          }
        });
  }

  @Test
  void idleConnectionsAreClosed() throws Exception {
    Socket s = connect("127.0.0.20");
    assertThat(healthz(s)).startsWith("HTTP/1.1 200 ");
    long t0 = System.nanoTime();
    assertClosedByServer(s); // http.idle_timeout=2s; the read waits at most 10 s
    assertThat(System.nanoTime() - t0).isGreaterThan(TimeUnit.MILLISECONDS.toNanos(1_500));
  }
}
