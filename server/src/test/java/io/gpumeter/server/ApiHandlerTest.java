package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import ch.qos.logback.classic.Logger;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.read.ListAppender;
import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.AdmissionRejectedException;
import io.gpumeter.metering.Ticker;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.channel.socket.ChannelInputShutdownEvent;
import io.netty.handler.codec.http.DefaultFullHttpRequest;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpVersion;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Consumer;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;
import org.slf4j.LoggerFactory;

/** The connection handler alone, on an {@link EmbeddedChannel}: no server, no sockets. */
class ApiHandlerTest {
  private final HttpMetrics metrics =
      new ServerMetrics(new PrometheusRegistry(), Ticker.system()).http();

  private static DefaultFullHttpRequest get(String uri) {
    return new DefaultFullHttpRequest(HttpVersion.HTTP_1_1, HttpMethod.GET, uri);
  }

  /** Answers 200 with the request's path as the body. */
  private static void echoPath(Exchange ex) {
    ex.respond(
        HttpResponseStatus.OK,
        Unpooled.copiedBuffer(ex.path(), StandardCharsets.UTF_8),
        "text/plain",
        null,
        null);
  }

  private static JsonNode json(FullHttpResponse r) throws Exception {
    try {
      return Json.MAPPER.readTree(r.content().toString(StandardCharsets.UTF_8));
    } finally {
      r.release();
    }
  }

  /**
   * Every place that makes a 429 or a 503, and an anonymous one: each leaves with Retry-After (its
   * own value, or the handler's default).
   */
  @Test
  void every429And503CarriesRetryAfter() {
    Map<String, Supplier<ApiException>> producers =
        Map.of(
            "overloaded", Authenticator::overloaded,
            "billing refuses", () -> CompletionsEndpoint.billingRefuses("outbox full"),
            "queue full",
                () ->
                    CompletionsEndpoint.rejected(
                        new AdmissionRejectedException(
                            AdmissionRejectedException.Reason.QUEUE_FULL, "full")),
            "shutting down",
                () ->
                    CompletionsEndpoint.rejected(
                        new AdmissionRejectedException(
                            AdmissionRejectedException.Reason.SHUTTING_DOWN, "stopping")),
            "any 503",
                () ->
                    new ApiException(
                        HttpResponseStatus.SERVICE_UNAVAILABLE,
                        ApiException.SERVER,
                        "no header given",
                        null,
                        "x"),
            "any 429",
                () ->
                    new ApiException(
                        HttpResponseStatus.TOO_MANY_REQUESTS,
                        ApiException.RATE_LIMIT,
                        "no header given",
                        null,
                        "y"));
    for (Map.Entry<String, Supplier<ApiException>> p : producers.entrySet()) {
      ApiException e = p.getValue().get();
      assertThat(e.status().code()).as(p.getKey()).isIn(429, 503);
      EmbeddedChannel ch =
          new EmbeddedChannel(
              new ApiHandler(
                  ex -> {
                    throw e;
                  },
                  metrics));
      ch.writeInbound(get("/v1/completions"));
      FullHttpResponse r = ch.readOutbound();
      assertThat(r.status().code()).as(p.getKey()).isEqualTo(e.status().code());
      String retryAfter = r.headers().get(HttpHeaderNames.RETRY_AFTER);
      assertThat(retryAfter).as(p.getKey()).isNotNull().matches("[1-9][0-9]*");
      r.release();
      ch.finishAndReleaseAll();
    }
  }

  @Test
  void badPercentEncodingIs400WithOneLogLineAndTheConnectionGoesOn() throws Exception {
    Logger handlerLog = (Logger) LoggerFactory.getLogger(ApiHandler.class);
    Logger exchangeLog = (Logger) LoggerFactory.getLogger(Exchange.class);
    ListAppender<ILoggingEvent> logs = new ListAppender<>();
    logs.start();
    handlerLog.addAppender(logs);
    exchangeLog.addAppender(logs);
    try {
      List<String> dispatched = new ArrayList<>();
      EmbeddedChannel ch =
          new EmbeddedChannel(
              new ApiHandler(
                  ex -> {
                    dispatched.add(ex.path());
                    echoPath(ex);
                  },
                  metrics));
      for (String uri : new String[] {"/healthz%zz", "/v1/usage?start=%zz", "/x?a=%4"}) {
        logs.list.clear();
        ch.writeInbound(get(uri));
        FullHttpResponse r = ch.readOutbound();
        assertThat(r.status().code()).as(uri).isEqualTo(400);
        JsonNode e = json(r).get("error");
        assertThat(e.get("type").asText()).isEqualTo("invalid_request_error");
        assertThat(e.get("code").asText()).isEqualTo("invalid_url_encoding");
        assertThat(e.get("param").isNull()).isTrue();
        assertThat(e.get("message").asText()).contains("Percent-escapes", "%25");
        assertThat(logs.list).as(uri).hasSize(1);
        assertThat(logs.list.get(0).getThrowableProxy()).as("no stack trace").isNull();
      }
      assertThat(dispatched).isEmpty();
      assertThat(ch.isActive()).isTrue();
      ch.writeInbound(get("/healthz%20ok"));
      FullHttpResponse ok = ch.readOutbound();
      assertThat(ok.status().code()).isEqualTo(200);
      assertThat(ok.content().toString(StandardCharsets.UTF_8)).isEqualTo("/healthz ok");
      ok.release();
      ch.finishAndReleaseAll();
    } finally {
      handlerLog.detachAppender(logs);
      exchangeLog.detachAppender(logs);
    }
  }

  /**
   * Far more pipelined requests than the bound, behind one in flight: reading pauses instead of the
   * connection closing, and every request is answered, in order.
   */
  @Test
  void deepPipeliningPausesReadingAndAnswersEveryRequestInOrder() {
    List<Exchange> held = new ArrayList<>();
    Consumer<Exchange> routes =
        ex -> {
          if (ex.path().equals("/slow")) {
            held.add(ex); // answered later, like a generation
          } else {
            echoPath(ex);
          }
        };
    EmbeddedChannel ch = new EmbeddedChannel(new ApiHandler(routes, metrics));
    int n = 5 * ApiHandler.MAX_PIPELINED;
    ch.writeInbound(get("/slow"));
    for (int i = 0; i < n; i++) {
      ch.writeInbound(get("/r" + i));
    }
    assertThat(ch.isActive()).as("the connection stays open").isTrue();
    assertThat(ch.config().isAutoRead()).as("reading paused at the bound").isFalse();
    assertThat((Object) ch.readOutbound()).as("nothing answered yet").isNull();
    held.get(0).respond(HttpResponseStatus.OK, Unpooled.EMPTY_BUFFER, "text/plain", null, null);
    FullHttpResponse first = ch.readOutbound();
    assertThat(first.status().code()).isEqualTo(200);
    first.release();
    for (int i = 0; i < n; i++) {
      FullHttpResponse r = ch.readOutbound();
      assertThat(r).as("response " + i).isNotNull();
      assertThat(r.content().toString(StandardCharsets.UTF_8)).isEqualTo("/r" + i);
      r.release();
    }
    assertThat(ch.config().isAutoRead()).as("reading resumed once drained").isTrue();
    assertThat(ch.isActive()).isTrue();
    ch.finishAndReleaseAll();
  }

  @Test
  void halfClosedClientGetsItsAnswersThenTheConnectionCloses() {
    List<Exchange> held = new ArrayList<>();
    AtomicBoolean abandoned = new AtomicBoolean();
    Consumer<Exchange> routes =
        ex -> {
          if (ex.path().equals("/slow")) {
            ex.onAbandon(() -> abandoned.set(true));
            held.add(ex);
          } else {
            echoPath(ex);
          }
        };
    EmbeddedChannel ch = new EmbeddedChannel(new ApiHandler(routes, metrics));
    ch.writeInbound(get("/slow"));
    ch.writeInbound(get("/after"));
    ch.pipeline().fireUserEventTriggered(ChannelInputShutdownEvent.INSTANCE);
    assertThat(ch.isOpen()).as("a half-close is not a disconnect").isTrue();
    held.get(0).respond(HttpResponseStatus.OK, Unpooled.EMPTY_BUFFER, "text/plain", null, null);
    FullHttpResponse slow = ch.readOutbound();
    FullHttpResponse after = ch.readOutbound();
    assertThat(slow.status().code()).isEqualTo(200);
    assertThat(after.content().toString(StandardCharsets.UTF_8)).isEqualTo("/after");
    assertThat(after.headers().get(HttpHeaderNames.CONNECTION)).isEqualTo("close");
    slow.release();
    after.release();
    ch.runPendingTasks();
    assertThat(ch.isOpen()).as("closed after the last answer").isFalse();
    assertThat(abandoned).isFalse();
    ch.finishAndReleaseAll();
  }

  @Test
  void aRealDisconnectStillAbandonsTheExchangeInFlight() {
    AtomicBoolean abandoned = new AtomicBoolean();
    EmbeddedChannel ch =
        new EmbeddedChannel(new ApiHandler(ex -> ex.onAbandon(() -> abandoned.set(true)), metrics));
    ch.writeInbound(get("/slow"));
    ch.close();
    assertThat(abandoned).isTrue();
    ch.finishAndReleaseAll();
  }

  @Test
  void halfCloseWithNothingInFlightClosesAtOnce() {
    EmbeddedChannel ch = new EmbeddedChannel(new ApiHandler(ApiHandlerTest::echoPath, metrics));
    ch.writeInbound(get("/a"));
    FullHttpResponse a = ch.readOutbound();
    assertThat(a.status().code()).isEqualTo(200);
    a.release();
    ch.pipeline().fireUserEventTriggered(ChannelInputShutdownEvent.INSTANCE);
    assertThat(ch.isOpen()).isFalse();
    ch.finishAndReleaseAll();
  }
}
