package io.gpumeter.server;

import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.handler.codec.http.HttpContent;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.LastHttpContent;
import io.netty.util.ReferenceCountUtil;

/**
 * Refuses request bodies over the limit before they are aggregated. Sits between the HTTP codec and
 * the aggregator.
 *
 * <p>A request whose {@code Content-Length} is over the limit, or whose chunked body grows past it,
 * is replaced by an {@link OversizedRequest} for {@link ApiHandler} to answer with 413 in request
 * order. The rest of its body is read and dropped (up to {@value #MAX_DISCARD} more bytes), and the
 * connection is closed once both the body has ended and the 413 is written: a client still sending
 * then reads the answer instead of a connection reset. Nothing on the connection is processed after
 * it.
 */
final class BodyLimitHandler extends ChannelInboundHandlerAdapter {
  /** Past this many dropped bytes the connection is closed without waiting for the body's end. */
  static final long MAX_DISCARD = 64L * 1024 * 1024;

  private final int limit;
  private HttpRequest lastRequest;
  private long received;
  private OversizedRequest discarding;
  private long discarded;

  BodyLimitHandler(int limit) {
    this.limit = limit;
  }

  @Override
  public void channelRead(ChannelHandlerContext ctx, Object msg) {
    if (discarding != null) {
      drop(ctx, msg);
      return;
    }
    if (msg instanceof HttpRequest req && !req.decoderResult().isFailure()) {
      received = 0;
      if (HttpUtil.getContentLength(req, -1L) > limit) {
        reject(ctx, req);
        if (HttpUtil.is100ContinueExpected(req) || msg instanceof LastHttpContent) {
          discarding.bodyEnded(ctx); // the client waits for our answer and sends no body
        }
        if (msg instanceof HttpContent) {
          ReferenceCountUtil.release(msg);
        }
        return;
      }
    }
    if (msg instanceof HttpContent content) {
      received += content.content().readableBytes();
      if (received > limit) {
        reject(ctx, lastRequest);
        drop(ctx, msg);
        return;
      }
    }
    if (msg instanceof HttpRequest req) {
      lastRequest = req;
    }
    ctx.fireChannelRead(msg);
  }

  private void reject(ChannelHandlerContext ctx, HttpRequest req) {
    discarding = new OversizedRequest(req, limit);
    ctx.fireChannelRead(discarding);
  }

  private void drop(ChannelHandlerContext ctx, Object msg) {
    try {
      if (msg instanceof HttpContent content) {
        discarded += content.content().readableBytes();
        if (msg instanceof LastHttpContent) {
          discarding.bodyEnded(ctx);
        } else if (discarded > MAX_DISCARD) {
          ctx.close();
        }
      }
    } finally {
      ReferenceCountUtil.release(msg);
    }
  }
}
