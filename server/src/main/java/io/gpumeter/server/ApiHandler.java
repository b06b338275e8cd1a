package io.gpumeter.server;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFuture;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelOutboundBuffer;
import io.netty.channel.socket.ChannelInputShutdownEvent;
import io.netty.channel.socket.SocketChannel;
import io.netty.handler.codec.PrematureChannelClosureException;
import io.netty.handler.codec.http.DefaultHttpContent;
import io.netty.handler.codec.http.DefaultLastHttpContent;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpHeaders;
import io.netty.handler.codec.http.HttpResponse;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.handler.codec.http.LastHttpContent;
import io.netty.handler.timeout.IdleStateEvent;
import io.netty.util.AsciiString;
import io.netty.util.ReferenceCountUtil;
import java.io.IOException;
import java.nio.channels.ClosedChannelException;
import java.util.ArrayDeque;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One HTTP/1.1 connection: hands each aggregated request to {@link Routes} as an {@link Exchange},
 * and writes the responses.
 *
 * <p><b>Concurrency:</b> every method runs on the channel's event loop, so no field needs a lock.
 * Nothing here blocks: API key lookups and usage queries run on the blocking executor, and
 * generations on their model's scheduler thread; both come back through {@link Exchange#then}.
 *
 * <p><b>Order and pipelining:</b> responses leave in request order. A request that arrives while
 * another is in flight (HTTP pipelining) waits in a queue. Every request that was read gets a
 * response: when {@value #MAX_PIPELINED} are waiting, reading stops (auto-read off, so TCP pushes
 * back on the client) and resumes once the queue has drained to half of that. While reading goes
 * on, a client that resets the connection is noticed at once and its generation cancelled (it is
 * still charged for the steps it took part in).
 *
 * <p><b>Half-close:</b> a client may send its requests and then shut down its output (the channel
 * allows half-closure). That is not a disconnect: the requests already read are answered, and the
 * connection is closed after the last response. Only the channel going inactive (a reset, or a
 * failed write) abandons the exchange in flight. At the TCP level a client that calls {@code
 * close()} without a reset looks the same as a half-close until the server writes, so its
 * generation runs to its end (bounded by {@code max_tokens} and the request timeout).
 *
 * <p><b>Keep-alive:</b> the connection stays open after a response unless the request asked
 * otherwise, the request could not be parsed, or its body was too large.
 *
 * <p><b>Retry-After:</b> every 429 and 503 carries it; an answer without one gets {@value
 * #RETRY_AFTER_429_SECONDS} s (429) or {@value #RETRY_AFTER_503_SECONDS} s (503).
 *
 * <p><b>Flushing:</b> responses written while a read is in progress are flushed once in {@link
 * #channelReadComplete}; asynchronous responses are flushed as they are written.
 */
final class ApiHandler extends ChannelInboundHandlerAdapter {
  private static final Logger log = LoggerFactory.getLogger(ApiHandler.class);

  /** Requests waiting behind the one in flight at which reading pauses. */
  static final int MAX_PIPELINED = 16;

  /** Longest wait for the client's end of stream after the last response (lingering close). */
  static final long LINGER_MILLIS = 2_000;

  static final String RETRY_AFTER_429_SECONDS = "1";
  static final String RETRY_AFTER_503_SECONDS = "5";

  private final Consumer<Exchange> routes;
  private final HttpMetrics metrics;
  private final ArrayDeque<Object> pending = new ArrayDeque<>();
  private ChannelHandlerContext ctx;
  private Exchange current;
  private boolean reading;
  private boolean flushNeeded;
  private boolean closing;
  private boolean inputShutdown;
  private boolean readPaused;
  private boolean dispatching;
  private boolean streamKeepAlive;

  /**
   * @param routes answers each exchange, at once or later ({@link Routes#dispatch}); what it throws
   *     becomes the error response
   */
  ApiHandler(Consumer<Exchange> routes, HttpMetrics metrics) {
    this.routes = routes;
    this.metrics = metrics;
  }

  @Override
  public void handlerAdded(ChannelHandlerContext ctx) {
    this.ctx = ctx;
  }

  @Override
  public void channelRead(ChannelHandlerContext ctx, Object msg) {
    reading = true;
    if (closing || !(msg instanceof FullHttpRequest || msg instanceof OversizedRequest)) {
      ReferenceCountUtil.release(msg);
      return;
    }
    // Requests already decoded from this read are queued even past the bound: dropping one would
    // leave it without a response. Reading pauses, so the queue grows no further.
    pending.add(msg);
    next();
  }

  /**
   * Begins queued requests while none is in flight. A loop, not recursion: requests answered at
   * once (errors, {@code /healthz}) would otherwise nest one call per queued request.
   */
  private void next() {
    if (dispatching) {
      return; // the loop further up the stack goes on
    }
    dispatching = true;
    try {
      Object msg;
      while (current == null && !closing && (msg = pending.poll()) != null) {
        begin(msg);
      }
    } finally {
      dispatching = false;
    }
    pauseOrResumeReading();
  }

  /**
   * Reading pauses while {@value #MAX_PIPELINED} requests wait or the client does not read its
   * responses (the channel is not writable), and resumes at half of that.
   */
  private void pauseOrResumeReading() {
    if (closing) {
      return;
    }
    boolean writable = ctx.channel().isWritable();
    if (!readPaused && (pending.size() >= MAX_PIPELINED || !writable)) {
      readPaused = true;
      ctx.channel().config().setAutoRead(false);
    } else if (readPaused && writable && pending.size() <= MAX_PIPELINED / 2) {
      readPaused = false;
      ctx.channel().config().setAutoRead(true);
    }
  }

  @Override
  public void channelWritabilityChanged(ChannelHandlerContext ctx) {
    pauseOrResumeReading();
    ctx.fireChannelWritabilityChanged();
  }

  private void begin(Object msg) {
    if (msg instanceof OversizedRequest o) {
      current = new Exchange(this, ctx, o.request(), null, o, metrics.now());
      current.fail(
          new ApiException(
              HttpResponseStatus.REQUEST_ENTITY_TOO_LARGE,
              ApiException.INVALID_REQUEST,
              "request body exceeds the limit of " + o.limit() + " bytes",
              null,
              "request_too_large"));
      return;
    }
    FullHttpRequest req = (FullHttpRequest) msg;
    Exchange ex = new Exchange(this, ctx, req, req.content(), null, metrics.now());
    current = ex;
    if (req.decoderResult().isFailure()) {
      ex.forceClose();
      ex.fail(
          new ApiException(
              HttpResponseStatus.BAD_REQUEST,
              ApiException.INVALID_REQUEST,
              "malformed HTTP request: " + req.decoderResult().cause().getMessage(),
              null,
              "malformed_http"));
      return;
    }
    if (ex.badTarget() != null) {
      log.info(
          "400 to {} {}: bad percent-encoding in the request target: {}",
          ctx.channel().remoteAddress(),
          req.method(),
          ex.badTarget());
      ex.fail(
          new ApiException(
              HttpResponseStatus.BAD_REQUEST,
              ApiException.INVALID_REQUEST,
              "The request target is not valid: "
                  + ex.badTarget()
                  + ". Percent-escapes must be '%' followed by two hex digits (send '%25' for a"
                  + " literal '%').",
              null,
              "invalid_url_encoding"));
      return;
    }
    try {
      routes.accept(ex);
    } catch (Exception | Error e) {
      ex.fail(e);
    }
  }

  /** Called by {@link Exchange} exactly once per exchange, on the event loop. */
  void send(Exchange ex, FullHttpResponse resp) {
    Runnable undelivered = ex.undeliveredHook();
    if (ex != current) {
      resp.release(); // the connection went away first
      if (undelivered != null) {
        undelivered.run();
      }
      return;
    }
    current = null;
    metrics.responded(ex.path(), resp.status().code(), ex.startNanos());
    // After a half-close the last queued request's response ends the connection.
    boolean keepAlive = ex.keepAlive() && !closing && !(inputShutdown && pending.isEmpty());
    resp.headers().setInt(HttpHeaderNames.CONTENT_LENGTH, resp.content().readableBytes());
    processingTime(ex, resp);
    int code = resp.status().code();
    if ((code == 429 || code == 503) && !resp.headers().contains(HttpHeaderNames.RETRY_AFTER)) {
      resp.headers()
          .set(
              HttpHeaderNames.RETRY_AFTER,
              code == 429 ? RETRY_AFTER_429_SECONDS : RETRY_AFTER_503_SECONDS);
    }
    if (!keepAlive) {
      resp.headers().set(HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE);
    } else if (ex.request().protocolVersion() == HttpVersion.HTTP_1_0) {
      resp.headers().set(HttpHeaderNames.CONNECTION, HttpHeaderValues.KEEP_ALIVE);
    }
    ChannelFuture written;
    if (reading && keepAlive) {
      written = ctx.write(resp);
      flushNeeded = true;
    } else {
      written = ctx.writeAndFlush(resp);
    }
    if (undelivered != null) {
      // A reset while the response is written: the client did not get it (invariant 15).
      written.addListener(
          f -> {
            if (!f.isSuccess()) {
              undelivered.run();
            }
          });
    }
    ex.release();
    if (!keepAlive) {
      closing = true;
      releasePending();
      OversizedRequest oversized = ex.oversized();
      if (oversized != null) {
        // Close once the client has also finished sending its body, so it reads the 413
        // instead of a reset.
        written.addListener(f -> oversized.responded(ctx));
      } else {
        written.addListener(f -> lingeringClose(f.isSuccess()));
      }
      return;
    }
    next();
  }

  static final AsciiString OPENAI_PROCESSING_MS = AsciiString.cached("openai-processing-ms");

  /**
   * {@code openai-processing-ms} on API responses ({@code /v1/...}): whole milliseconds from the
   * request's dispatch to its response (for a stream, to its head).
   */
  private void processingTime(Exchange ex, HttpResponse resp) {
    if (ex.path().startsWith("/v1/")) {
      long ms = Math.max(0, metrics.now() - ex.startNanos()) / 1_000_000;
      resp.headers().set(OPENAI_PROCESSING_MS, Long.toString(ms));
    }
  }

  // ---- streamed responses (server-sent events): head, chunks, end; see SseStream ----

  /**
   * Sends the head of a streamed (chunked) response for the exchange in flight; the exchange stays
   * in flight, so a disconnect still abandons it. False when the connection went away first.
   */
  boolean sendStreamHead(Exchange ex, HttpResponse head) {
    if (ex != current) {
      return false;
    }
    streamKeepAlive = ex.keepAlive() && !closing && !(inputShutdown && pending.isEmpty());
    HttpUtil.setTransferEncodingChunked(head, true);
    processingTime(ex, head);
    if (!streamKeepAlive) {
      head.headers().set(HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE);
    } else if (ex.request().protocolVersion() == HttpVersion.HTTP_1_0) {
      head.headers().set(HttpHeaderNames.CONNECTION, HttpHeaderValues.KEEP_ALIVE);
    }
    ctx.writeAndFlush(head);
    return true;
  }

  /**
   * Writes one chunk of a streamed response, flushed when {@code flush}; takes ownership of {@code
   * content}.
   */
  ChannelFuture sendStreamChunk(Exchange ex, ByteBuf content, boolean flush) {
    if (ex != current) {
      content.release();
      return ctx.newFailedFuture(new ClosedChannelException());
    }
    DefaultHttpContent chunk = new DefaultHttpContent(content);
    return flush ? ctx.writeAndFlush(chunk) : ctx.write(chunk);
  }

  /** Flushes the streamed chunks written unflushed. */
  void flushStream(Exchange ex) {
    if (ex == current) {
      ctx.flush();
    }
  }

  /** Bytes written to this connection that the client has not yet taken (Netty's buffer). */
  long unsentBytes() {
    ChannelOutboundBuffer out = ctx.channel().unsafe().outboundBuffer();
    return out == null ? 0 : out.totalPendingWriteBytes();
  }

  /** Ends a streamed response; the next pipelined request begins (or the connection closes). */
  void sendStreamEnd(Exchange ex, HttpHeaders trailers) {
    if (ex != current) {
      return;
    }
    current = null;
    metrics.responded(ex.path(), HttpResponseStatus.OK.code(), ex.startNanos());
    LastHttpContent last = LastHttpContent.EMPTY_LAST_CONTENT;
    if (trailers != null && !trailers.isEmpty()) {
      last = new DefaultLastHttpContent(Unpooled.EMPTY_BUFFER);
      last.trailingHeaders().set(trailers);
    }
    ChannelFuture written = ctx.writeAndFlush(last);
    ex.release();
    if (!streamKeepAlive) {
      closing = true;
      releasePending();
      written.addListener(f -> lingeringClose(f.isSuccess()));
      return;
    }
    next();
  }

  /**
   * Drops the connection under a streamed response (a reader too slow for the stream's buffer): the
   * channel goes inactive and the exchange is abandoned as if the client had left.
   */
  void dropConnection() {
    ctx.close();
  }

  /**
   * Starts a streamed response to {@code ex}: writes {@code head} (chunked for HTTP/1.1; for
   * HTTP/1.0 without a length, the connection then ends the body) and returns the stream its body
   * is written to, or null when the client went away first. The exchange stays the one in flight
   * (pipelined requests wait) until {@link #endStream}. Event loop only.
   */
  ChunkedResponse beginStream(Exchange ex, HttpResponse head) {
    if (ex != current) {
      return null;
    }
    boolean http10 = ex.request().protocolVersion() == HttpVersion.HTTP_1_0;
    boolean keepAlive =
        !http10 && ex.keepAlive() && !closing && !(inputShutdown && pending.isEmpty());
    if (http10) {
      head.headers().remove(HttpHeaderNames.TRANSFER_ENCODING);
    } else {
      HttpUtil.setTransferEncodingChunked(head, true);
    }
    if (!keepAlive) {
      head.headers().set(HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE);
    }
    ctx.writeAndFlush(head);
    return new ChunkedResponse(this, ex, ctx.channel(), keepAlive, head.status().code());
  }

  /**
   * The streamed response of {@code ex} ended ({@code last} is the write of its last content, or
   * null when it was aborted): the next request may begin, or the connection ends. Event loop only.
   */
  void endStream(Exchange ex, boolean keepAlive, int status, ChannelFuture last) {
    if (ex != current) {
      return;
    }
    current = null;
    metrics.responded(ex.path(), status, ex.startNanos());
    ex.release();
    if (last == null) {
      closing = true;
      releasePending();
      ctx.close();
      return;
    }
    if (!keepAlive) {
      closing = true;
      releasePending();
      last.addListener(f -> lingeringClose(f.isSuccess()));
      return;
    }
    next();
  }

  /**
   * Ends the connection after its last response without losing that response: the output is shut
   * down (the client reads the response, then end of stream), what the client still sends is read
   * and dropped, and the channel closes when the client closes its side or after {@value
   * #LINGER_MILLIS} ms. Closing at once with unread input would make the kernel send a reset, and a
   * reset can destroy the response before the client reads it.
   */
  private void lingeringClose(boolean written) {
    Channel ch = ctx.channel();
    if (!written || inputShutdown || !(ch instanceof SocketChannel s) || !s.isActive()) {
      ch.close();
      return;
    }
    ch.config().setAutoRead(true); // to see the client's end of stream
    s.shutdownOutput();
    ScheduledFuture<?> timeout =
        ch.eventLoop().schedule(() -> ch.close(), LINGER_MILLIS, TimeUnit.MILLISECONDS);
    ch.closeFuture().addListener(f -> timeout.cancel(false));
  }

  @Override
  public void channelReadComplete(ChannelHandlerContext ctx) {
    reading = false;
    if (flushNeeded) {
      flushNeeded = false;
      ctx.flush();
    }
    ctx.fireChannelReadComplete();
  }

  @Override
  public void channelInactive(ChannelHandlerContext ctx) {
    closing = true;
    Exchange ex = current;
    current = null;
    if (ex != null) {
      ex.abandon();
    }
    releasePending();
    ctx.fireChannelInactive();
  }

  @Override
  public void userEventTriggered(ChannelHandlerContext ctx, Object evt) {
    if (evt instanceof ChannelInputShutdownEvent) {
      // The client finished sending (half-close): answer what was read, then close.
      inputShutdown = true;
      if (closing || (current == null && pending.isEmpty())) {
        closing = true;
        ctx.close();
      }
      return;
    }
    if (evt instanceof IdleStateEvent && current == null && pending.isEmpty()) {
      closing = true;
      ctx.close();
      return;
    }
    ctx.fireUserEventTriggered(evt);
  }

  @Override
  public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
    if (cause instanceof IOException || cause instanceof PrematureChannelClosureException) {
      log.debug("connection {} failed: {}", ctx.channel().remoteAddress(), cause.toString());
    } else {
      log.warn("connection {} failed", ctx.channel().remoteAddress(), cause);
    }
    closing = true;
    ctx.close();
  }

  private void releasePending() {
    Object m;
    while ((m = pending.poll()) != null) {
      ReferenceCountUtil.release(m);
    }
  }
}
