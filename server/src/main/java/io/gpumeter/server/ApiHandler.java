package io.gpumeter.server;

import io.netty.channel.ChannelFuture;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.handler.codec.PrematureChannelClosureException;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.handler.timeout.IdleStateEvent;
import io.netty.util.ReferenceCountUtil;
import java.io.IOException;
import java.util.ArrayDeque;
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
 * <p><b>Order and keep-alive:</b> responses leave in request order. A request that arrives while
 * another is in flight (HTTP pipelining) waits in a small queue; beyond {@value #MAX_PIPELINED} the
 * connection is closed. Reading goes on meanwhile, so a client that disconnects is noticed at once
 * and its generation cancelled (it is still charged for the steps it took part in). The connection
 * stays open after a response unless the request asked otherwise, the request could not be parsed,
 * or its body was too large.
 *
 * <p><b>Flushing:</b> responses written while a read is in progress are flushed once in {@link
 * #channelReadComplete}; asynchronous responses are flushed as they are written.
 */
final class ApiHandler extends ChannelInboundHandlerAdapter {
  private static final Logger log = LoggerFactory.getLogger(ApiHandler.class);
  static final int MAX_PIPELINED = 16;

  private final Routes routes;
  private final HttpMetrics metrics;
  private final ArrayDeque<Object> pending = new ArrayDeque<>();
  private ChannelHandlerContext ctx;
  private Exchange current;
  private boolean reading;
  private boolean flushNeeded;
  private boolean closing;

  ApiHandler(Routes routes, HttpMetrics metrics) {
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
    if (current != null) {
      if (pending.size() >= MAX_PIPELINED) {
        ReferenceCountUtil.release(msg);
        closing = true;
        ctx.close();
      } else {
        pending.add(msg);
      }
      return;
    }
    begin(msg);
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
    try {
      routes.dispatch(ex);
    } catch (Exception | Error e) {
      ex.fail(e);
    }
  }

  /** Called by {@link Exchange} exactly once per exchange, on the event loop. */
  void send(Exchange ex, FullHttpResponse resp) {
    if (ex != current) {
      resp.release(); // the connection went away first
      return;
    }
    current = null;
    metrics.responded(ex.path(), resp.status().code(), ex.startNanos());
    boolean keepAlive = ex.keepAlive() && !closing;
    resp.headers().setInt(HttpHeaderNames.CONTENT_LENGTH, resp.content().readableBytes());
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
        written.addListener(ChannelFutureListener.CLOSE);
      }
      return;
    }
    Object next = pending.poll();
    if (next != null) {
      begin(next);
    }
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
