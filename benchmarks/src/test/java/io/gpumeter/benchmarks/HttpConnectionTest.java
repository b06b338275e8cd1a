package io.gpumeter.benchmarks;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The load tools' raw HTTP/1.1 client and the checks {@link Overload} applies to answers. */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class HttpConnectionTest {

  /** Serves the given raw responses, one per request read (a request is read up to its body). */
  private static CompletableFuture<List<String>> serve(ServerSocket ss, String... responses) {
    return CompletableFuture.supplyAsync(
        () -> {
          List<String> requests = new java.util.ArrayList<>();
          try (Socket s = ss.accept()) {
            InputStream in = s.getInputStream();
            OutputStream out = s.getOutputStream();
            for (String resp : responses) {
              requests.add(readRequest(in));
              if (resp == null) {
                return requests; // close without answering
              }
              out.write(resp.getBytes(StandardCharsets.UTF_8));
              out.flush();
            }
          } catch (IOException e) {
            throw new IllegalStateException(e);
          }
          return requests;
        });
  }

  private static String readRequest(InputStream in) throws IOException {
    ByteArrayOutputStream head = new ByteArrayOutputStream();
    while (!head.toString(StandardCharsets.US_ASCII).endsWith("\r\n\r\n")) {
      int c = in.read();
      if (c < 0) {
        throw new EOFException();
      }
      head.write(c);
    }
    String h = head.toString(StandardCharsets.US_ASCII);
    int at = h.toLowerCase(java.util.Locale.ROOT).indexOf("content-length: ");
    int len = at < 0 ? 0 : Integer.parseInt(h.substring(at + 16, h.indexOf('\r', at)).trim());
    return h + new String(in.readNBytes(len), StandardCharsets.UTF_8);
  }

  private static byte[] post(String body) {
    return ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + body.length()
            + "\r\n\r\n"
            + body)
        .getBytes(StandardCharsets.US_ASCII);
  }

  @Test
  void readsStatusHeadersAndBodyOverOneKeptAliveConnection() throws Exception {
    try (ServerSocket ss = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      String ok =
          "{\"usage\":{\"prompt_tokens\":4,\"device_time_ms\":3.14,\"device_time_ns\":3141593}}";
      String refused = "{\"error\":{\"message\":\"full \\\"q\\\"\",\"code\":\"queue_full\"}}";
      CompletableFuture<List<String>> server =
          serve(
              ss,
              "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: cmpl-1\r\n"
                  + "content-length: "
                  + ok.length()
                  + "\r\n\r\n"
                  + ok,
              "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: "
                  + refused.length()
                  + "\r\n\r\n"
                  + refused);
      try (HttpConnection c = new HttpConnection("127.0.0.1", ss.getLocalPort(), 10_000)) {
        c.exchange(post("{\"a\":1}"));
        assertThat(c.status()).isEqualTo(200);
        assertThat(c.requestId()).isEqualTo("cmpl-1");
        assertThat(c.retryAfter()).isNull();
        assertThat(c.longField(HttpConnection.jsonName("device_time_ns"), -1)).isEqualTo(3141593);
        assertThat(c.longField(HttpConnection.jsonName("absent"), -1)).isEqualTo(-1);

        c.exchange(post("{\"b\":2}"));
        assertThat(c.status()).isEqualTo(429);
        assertThat(c.retryAfter()).isEqualTo("1");
        assertThat(c.requestId()).isNull();
        assertThat(Overload.stringField(c.bodyText(), "code")).isEqualTo("queue_full");
        assertThat(Overload.stringField(c.bodyText(), "message")).isEqualTo("full \"q\"");
      }
      assertThat(server.get(10, TimeUnit.SECONDS))
          .hasSize(2)
          .satisfies(r -> assertThat(r.get(1)).endsWith("{\"b\":2}"));
    }
  }

  @Test
  void aBusyConnectionClosedWithoutAnAnswerIsAnError() throws Exception {
    try (ServerSocket ss = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      CompletableFuture<List<String>> server = serve(ss, (String) null);
      try (HttpConnection c = new HttpConnection("127.0.0.1", ss.getLocalPort(), 10_000)) {
        assertThatThrownBy(() -> c.exchange(post("{}")))
            .isInstanceOf(EOFException.class)
            .hasMessageContaining("without a response");
        assertThat(c.reconnects()).isZero();
      }
      assertThat(server.get(10, TimeUnit.SECONDS)).hasSize(1);
    }
  }

  @Test
  void anIdleConnectionTheServerClosedIsOpenedAgainAndTheRequestSentOnce() throws Exception {
    String ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    try (ServerSocket ss = new ServerSocket(0, 2, InetAddress.getLoopbackAddress())) {
      CompletableFuture<List<String>> server =
          CompletableFuture.supplyAsync(
              () -> {
                List<String> requests = new java.util.ArrayList<>();
                try {
                  try (Socket s = ss.accept()) { // answers one, then closes: an idle timeout
                    requests.add(readRequest(s.getInputStream()));
                    s.getOutputStream().write(ok.getBytes(StandardCharsets.US_ASCII));
                  }
                  try (Socket s = ss.accept()) {
                    requests.add(readRequest(s.getInputStream()));
                    s.getOutputStream().write(ok.getBytes(StandardCharsets.US_ASCII));
                  }
                } catch (IOException e) {
                  throw new IllegalStateException(e);
                }
                return requests;
              });
      // stale after 0 ns: every reused connection may have been closed while idle
      try (HttpConnection c = new HttpConnection("127.0.0.1", ss.getLocalPort(), 10_000, 0)) {
        c.exchange(post("{\"n\":1}"));
        assertThat(c.status()).isEqualTo(200);
        c.exchange(post("{\"n\":2}"));
        assertThat(c.status()).isEqualTo(200);
        assertThat(c.bodyText()).isEqualTo("ok");
        assertThat(c.reconnects()).isEqualTo(1);
      }
      assertThat(server.get(10, TimeUnit.SECONDS))
          .hasSize(2)
          .satisfies(r -> assertThat(r.get(1)).endsWith("{\"n\":2}"));
    }
  }

  @Test
  void retryAfterMustBeSecondsOrAnHttpDate() {
    assertThat(Overload.validRetryAfter("1")).isTrue();
    assertThat(Overload.validRetryAfter("120")).isTrue();
    assertThat(Overload.validRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT")).isTrue();
    assertThat(Overload.validRetryAfter(null)).isFalse();
    assertThat(Overload.validRetryAfter("")).isFalse();
    assertThat(Overload.validRetryAfter("-1")).isFalse();
    assertThat(Overload.validRetryAfter("1.5")).isFalse();
    assertThat(Overload.validRetryAfter("soon")).isFalse();
  }

  @Test
  void quantilesAreNearestRank() {
    long[] v = new long[100];
    for (int i = 0; i < v.length; i++) {
      v[i] = 100 - i;
    }
    assertThat(Overload.pct(v, 0.5)).isEqualTo(50);
    assertThat(Overload.pct(v, 0.99)).isEqualTo(99);
    assertThat(Overload.pct(new long[0], 0.5)).isNaN();
  }
}
