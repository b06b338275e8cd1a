package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelFuture;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.EventLoop;
import io.netty.handler.codec.http.DefaultFullHttpResponse;
import io.netty.handler.codec.http.DefaultHttpHeaders;
import io.netty.handler.codec.http.DefaultHttpResponse;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpHeaders;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.HttpResponse;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.util.AsciiString;
import io.netty.util.ReferenceCountUtil;
import java.io.IOException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ThreadLocalRandom;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One request and its one response. Owned by the connection's event loop: create, continue (through
 * {@link #then}) and answer it there. Exactly one of {@link #respond}, {@link #fail} or {@link
 * #abandon} takes effect; later calls are ignored, so a result that arrives after the client left
 * is dropped quietly.
 */
final class Exchange {
  private static final Logger log = LoggerFactory.getLogger(Exchange.class);

  static final AsciiString APPLICATION_JSON = AsciiString.cached("application/json");
  static final AsciiString X_REQUEST_ID = AsciiString.cached("x-request-id");

  private final ApiHandler handler;
  private final ChannelHandlerContext ctx;
  private final HttpRequest request;
  private final ByteBuf body;
  private final OversizedRequest oversized;
  private final QueryStringDecoder uri;
  private final String path;
  private final String badTarget;
  private final long startNanos;
  private boolean done;
  private boolean forceClose;
  private String requestId;
  private Runnable onAbandon;
  private Runnable onUndelivered;
  private Runnable onFail;
  private boolean streaming;
  private ConsoleSessions.Lookup console = ConsoleSessions.Lookup.NONE;
  private HttpHeaders extraHeaders;

  Exchange(
      ApiHandler handler,
      ChannelHandlerContext ctx,
      HttpRequest request,
      ByteBuf body,
      OversizedRequest oversized,
      long startNanos) {
    this.handler = handler;
    this.ctx = ctx;
    this.request = request;
    this.body = body == null ? Unpooled.EMPTY_BUFFER : body;
    this.oversized = oversized;
    this.forceClose = oversized != null;
    QueryStringDecoder decoder = new QueryStringDecoder(request.uri());
    String decodedPath;
    String bad = null;
    try {
      // Decoded once, here: a bad percent-escape is a 400 (see badTarget), never an exception
      // thrown later from path() or query().
      decodedPath = decoder.path();
      decoder.parameters();
    } catch (IllegalArgumentException e) {
      String why = String.valueOf(e.getMessage());
      bad = why.length() > 200 ? why.substring(0, 200) + "..." : why;
      decoder = new QueryStringDecoder("");
      decodedPath = rawPath(request.uri());
    }
    this.uri = decoder;
    this.path = decodedPath;
    this.badTarget = bad;
    this.startNanos = startNanos;
  }

  /** The path of {@code target} undecoded (for metrics and messages when it cannot be decoded). */
  private static String rawPath(String target) {
    int end = target.length();
    for (int i = 0; i < target.length(); i++) {
      char c = target.charAt(i);
      if (c == '?' || c == '#') {
        end = i;
        break;
      }
    }
    return target.substring(0, end);
  }

  /** Why the request target could not be percent-decoded (path or query), or null when it could. */
  String badTarget() {
    return badTarget;
  }

  HttpRequest request() {
    return request;
  }

  /** The request body (valid until the exchange is answered). */
  ByteBuf body() {
    return body;
  }

  /** When the request was dispatched, on the {@link HttpMetrics#now()} clock. */
  long startNanos() {
    return startNanos;
  }

  /** The decoded path; the raw one when {@link #badTarget()} is set. */
  String path() {
    return path;
  }

  /** First value of a query parameter, or null. */
  String query(String name) {
    var values = uri.parameters().get(name);
    return values == null || values.isEmpty() ? null : values.get(0);
  }

  /** Every value of a query parameter, in order; empty when absent. */
  java.util.List<String> queryAll(String name) {
    var values = uri.parameters().get(name);
    return values == null ? java.util.List.of() : values;
  }

  /** The names of the query parameters sent. */
  java.util.Set<String> queryNames() {
    return uri.parameters().keySet();
  }

  /** The client's address, for logs. */
  java.net.SocketAddress remoteAddress() {
    return ctx.channel().remoteAddress();
  }

  EventLoop loop() {
    return ctx.channel().eventLoop();
  }

  ByteBufAllocator alloc() {
    return ctx.alloc();
  }

  OversizedRequest oversized() {
    return oversized;
  }

  boolean keepAlive() {
    return !forceClose && HttpUtil.isKeepAlive(request);
  }

  void forceClose() {
    forceClose = true;
  }

  boolean isDone() {
    return done;
  }

  /** Sent back as {@code x-request-id}, and named in 500 messages. */
  void requestId(String id) {
    this.requestId = id;
  }

  /**
   * The id sent back as {@code x-request-id}: the one an endpoint set, else one made now ({@code
   * req_} and 96 random bits), so every response carries one.
   */
  String requestId() {
    if (requestId == null) {
      ThreadLocalRandom r = ThreadLocalRandom.current();
      requestId =
          "req_"
              + Long.toHexString(r.nextLong() | Long.MIN_VALUE)
              + Integer.toHexString(r.nextInt());
    }
    return requestId;
  }

  /**
   * What the request's console session cookie resolved to ({@link ConsoleSessions#resolve}); set by
   * {@link Routes#dispatch} before any endpoint runs. {@link ConsoleSessions.Lookup#NONE} when the
   * request carries an {@code Authorization} header or no cookie.
   */
  ConsoleSessions.Lookup console() {
    return console;
  }

  void console(ConsoleSessions.Lookup lookup) {
    this.console = lookup;
  }

  /** Runs if the client disconnects before the response (cancels a generation). */
  void onAbandon(Runnable r) {
    this.onAbandon = r;
  }

  /**
   * Runs if the response could not be written to the connection (a reset while it was written). A
   * successful write means the kernel took the bytes; a reset after that is not seen.
   */
  void onUndelivered(Runnable r) {
    this.onUndelivered = r;
  }

  /**
   * Runs once if the exchange is answered through {@link #fail} (an error response), before the
   * response is sent; not on a success, nor when the client is gone.
   */
  void onFail(Runnable r) {
    this.onFail = r;
  }

  /** The hook set by {@link #onUndelivered}, or null. */
  Runnable undeliveredHook() {
    return onUndelivered;
  }

  /** A step that continues an exchange on its event loop. */
  @FunctionalInterface
  interface Step<T> {
    void run(T value) throws Exception;
  }

  /**
   * Continues on the event loop once {@code future} completes: with its value, or by failing the
   * exchange with its exception. Does nothing if the exchange was answered or abandoned meanwhile.
   */
  <T> void then(CompletableFuture<T> future, Step<T> next) {
    // Inline when the future is complete on the loop (no task for a cached value): OnLoop.
    OnLoop.whenComplete(
        future,
        loop(),
        (value, error) -> {
          if (done) {
            return;
          }
          if (error != null) {
            fail(error);
            return;
          }
          try {
            next.run(value);
          } catch (Exception | Error e) {
            fail(e);
          }
        });
  }

  /**
   * Adds a header to the answer this exchange sends next ({@link #respond}, {@link
   * #respondChunked}, {@link #startStream}): the receipt and {@code x-ratelimit-*} headers. Event
   * loop only.
   */
  void header(AsciiString name, String value) {
    if (extraHeaders == null) {
      extraHeaders = new DefaultHttpHeaders();
    }
    extraHeaders.set(name, value);
  }

  private void addExtraHeaders(HttpHeaders to) {
    if (extraHeaders != null) {
      to.add(extraHeaders);
    }
  }

  void respondJson(HttpResponseStatus status, Json.Writer writer) {
    respond(status, Json.write(alloc(), writer), APPLICATION_JSON, null, null);
  }

  /** Sends the response; takes ownership of {@code content}. */
  void respond(
      HttpResponseStatus status,
      ByteBuf content,
      CharSequence contentType,
      AsciiString extraHeader,
      String extraValue) {
    if (done) {
      content.release();
      return;
    }
    done = true;
    FullHttpResponse resp =
        new DefaultFullHttpResponse(
            request.protocolVersion() == HttpVersion.HTTP_1_0
                ? HttpVersion.HTTP_1_0
                : HttpVersion.HTTP_1_1,
            status,
            content);
    resp.headers().set(HttpHeaderNames.CONTENT_TYPE, contentType);
    resp.headers().set(X_REQUEST_ID, requestId());
    addExtraHeaders(resp.headers());
    if (extraHeader != null) {
      resp.headers().set(extraHeader, extraValue);
    }
    handler.send(this, resp);
  }

  /** Sends the response with {@code headers} added; takes ownership of {@code content}. */
  void respond(
      HttpResponseStatus status,
      ByteBuf content,
      CharSequence contentType,
      io.netty.handler.codec.http.HttpHeaders headers) {
    if (done) {
      content.release();
      return;
    }
    done = true;
    FullHttpResponse resp =
        new DefaultFullHttpResponse(
            request.protocolVersion() == HttpVersion.HTTP_1_0
                ? HttpVersion.HTTP_1_0
                : HttpVersion.HTTP_1_1,
            status,
            content);
    resp.headers().set(headers);
    resp.headers().set(HttpHeaderNames.CONTENT_TYPE, contentType);
    resp.headers().set(X_REQUEST_ID, requestId());
    handler.send(this, resp);
  }

  /**
   * Starts a streamed (chunked) response with {@code status} and {@code contentType}, on the event
   * loop; its body is written through the returned stream, from any thread. Null when the exchange
   * was already answered or abandoned.
   */
  ChunkedResponse respondChunked(HttpResponseStatus status, CharSequence contentType) {
    if (done) {
      return null;
    }
    done = true;
    HttpResponse head =
        new DefaultHttpResponse(
            request.protocolVersion() == HttpVersion.HTTP_1_0
                ? HttpVersion.HTTP_1_0
                : HttpVersion.HTTP_1_1,
            status);
    head.headers().set(HttpHeaderNames.CONTENT_TYPE, contentType);
    addExtraHeaders(head.headers());
    if (requestId != null) {
      head.headers().set(X_REQUEST_ID, requestId);
    }
    return handler.beginStream(this, head);
  }

  static final AsciiString TEXT_EVENT_STREAM = AsciiString.cached("text/event-stream");

  /**
   * Starts a streamed 200 response of server-sent events. The exchange stays open (not done) until
   * {@link #endStream}: a disconnect meanwhile abandons it, and {@link #fail} ends the stream with
   * an error event. False when the exchange was answered or the connection went away first.
   */
  boolean startStream() {
    if (done || streaming) {
      return false;
    }
    HttpVersion version =
        request.protocolVersion() == HttpVersion.HTTP_1_0
            ? HttpVersion.HTTP_1_0
            : HttpVersion.HTTP_1_1;
    DefaultHttpResponse head = new DefaultHttpResponse(version, HttpResponseStatus.OK);
    head.headers().set(HttpHeaderNames.CONTENT_TYPE, TEXT_EVENT_STREAM);
    head.headers().set(HttpHeaderNames.CACHE_CONTROL, HttpHeaderValues.NO_CACHE);
    head.headers().set(X_REQUEST_ID, requestId());
    addExtraHeaders(head.headers());
    streaming = handler.sendStreamHead(this, head);
    return streaming;
  }

  boolean isStreaming() {
    return streaming;
  }

  /** Writes one chunk of the stream (takes ownership of {@code content}). */
  ChannelFuture writeStream(ByteBuf content) {
    return writeStream(content, true);
  }

  /**
   * Writes one chunk of the stream (takes ownership of {@code content}); unflushed unless {@code
   * flush}, for a caller that writes several and then calls {@link #flushStream}.
   */
  ChannelFuture writeStream(ByteBuf content, boolean flush) {
    return handler.sendStreamChunk(this, content, flush);
  }

  /** Flushes the chunks written with {@code flush} false. */
  void flushStream() {
    handler.flushStream(this);
  }

  /** Bytes of this connection's responses the client has not taken yet. */
  long unsentBytes() {
    return handler.unsentBytes();
  }

  /** Ends the stream (the last, empty chunk); the exchange is done. */
  void endStream() {
    endStream(null);
  }

  /**
   * Ends the stream with {@code trailers} (null or empty: none) in its last chunk (HTTP/1.1 chunked
   * trailers; an HTTP/1.0 body has none); the exchange is done.
   */
  void endStream(HttpHeaders trailers) {
    if (done) {
      return;
    }
    done = true;
    handler.sendStreamEnd(this, trailers);
  }

  /** Closes the connection under a stream; the exchange is then abandoned like a disconnect. */
  void dropConnection() {
    handler.dropConnection();
  }

  /** Answers with the OpenAI error body for {@code error}; anything unexpected is a logged 500. */
  void fail(Throwable error) {
    if (done) {
      return;
    }
    Throwable cause = unwrap(error);
    ApiException e;
    if (cause instanceof ApiException api) {
      e = api;
    } else {
      log.error(
          "{} {} failed{}",
          request.method(),
          path(),
          requestId == null ? "" : " (" + requestId + ")",
          cause);
      e =
          new ApiException(
              HttpResponseStatus.INTERNAL_SERVER_ERROR,
              ApiException.SERVER,
              "The server had an error while processing your request"
                  + (requestId == null ? "" : " (request id " + requestId + ")")
                  + ". Retry, and report it if the error persists.",
              null,
              "internal_error");
    }
    ApiException err = e;
    Runnable hook = onFail;
    if (hook != null) {
      onFail = null;
      try {
        hook.run();
      } catch (RuntimeException hookError) {
        log.error("failure hook of {} failed", requestId, hookError);
      }
    }
    if (streaming) {
      // The head (200) is out: the error goes as the stream's last event, without [DONE].
      ByteBuf event = SseStream.event(alloc(), g -> writeError(g, err));
      writeStream(event);
      endStream();
      return;
    }
    respond(
        err.status(),
        Json.write(alloc(), g -> writeError(g, err)),
        APPLICATION_JSON,
        err.headerName(),
        err.headerValue());
  }

  static void writeError(JsonGenerator g, ApiException e) throws IOException {
    g.writeStartObject();
    g.writeObjectFieldStart("error");
    g.writeStringField("message", e.getMessage());
    g.writeStringField("type", e.type());
    g.writeStringField("param", e.param());
    g.writeStringField("code", e.code());
    g.writeEndObject();
    g.writeEndObject();
  }

  /** The client went away: run the abandon hook and free the request. */
  void abandon() {
    if (done) {
      return;
    }
    done = true;
    Runnable r = onAbandon;
    release();
    if (r != null) {
      r.run();
    }
  }

  /** Frees the request's buffers; the handler calls it once the response is written. */
  void release() {
    ReferenceCountUtil.release(request);
  }

  static Throwable unwrap(Throwable t) {
    while ((t instanceof CompletionException || t instanceof ExecutionException)
        && t.getCause() != null) {
      t = t.getCause();
    }
    return t;
  }
}
