package io.gpumeter.server;

import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.HttpRequest;

/**
 * Stands in for a request whose body was over the limit (see {@link BodyLimitHandler}). The
 * connection closes when both the 413 has been written and the body has ended. Event loop only.
 */
final class OversizedRequest {
  private final HttpRequest request;
  private final int limit;
  private boolean responded;
  private boolean bodyEnded;

  OversizedRequest(HttpRequest request, int limit) {
    this.request = request;
    this.limit = limit;
  }

  HttpRequest request() {
    return request;
  }

  int limit() {
    return limit;
  }

  void responded(ChannelHandlerContext ctx) {
    responded = true;
    closeIfDone(ctx);
  }

  void bodyEnded(ChannelHandlerContext ctx) {
    bodyEnded = true;
    closeIfDone(ctx);
  }

  private void closeIfDone(ChannelHandlerContext ctx) {
    if (responded && bodyEnded) {
      ctx.channel().close();
    }
  }
}
