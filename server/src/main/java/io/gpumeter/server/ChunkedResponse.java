package io.gpumeter.server;

import io.netty.buffer.ByteBuf;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFuture;
import io.netty.handler.codec.http.DefaultHttpContent;
import io.netty.handler.codec.http.LastHttpContent;
import java.io.IOException;
import java.util.concurrent.TimeUnit;

/**
 * The body of a streamed response, written from a blocking thread (a usage query's cursor).
 *
 * <p><b>Memory:</b> {@link #write} waits until Netty has handed the chunk to the socket before it
 * returns, so at most one chunk is queued on the connection and one is being filled by the caller,
 * whatever the size of the whole body. A client that reads nothing for {@value
 * #WRITE_TIMEOUT_SECONDS} s is disconnected.
 *
 * <p><b>Errors:</b> the status line went out with the head, so a failure after it cannot become an
 * error response: {@link #abort} closes the connection instead, and the client sees a body that
 * ends without its last chunk (an incomplete chunked message), never a complete-looking one.
 */
final class ChunkedResponse {
  static final long WRITE_TIMEOUT_SECONDS = 60;

  private final ApiHandler handler;
  private final Exchange ex;
  private final Channel channel;
  private final boolean keepAlive;
  private final int status;
  private boolean ended;

  ChunkedResponse(ApiHandler handler, Exchange ex, Channel channel, boolean keepAlive, int status) {
    this.handler = handler;
    this.ex = ex;
    this.channel = channel;
    this.keepAlive = keepAlive;
    this.status = status;
  }

  /**
   * Sends {@code chunk} (taking ownership) and waits until it is written.
   *
   * @throws IOException if the client went away or stopped reading; the stream is then aborted
   */
  void write(ByteBuf chunk) throws IOException {
    if (ended || !channel.isActive()) {
      chunk.release();
      abort();
      throw new IOException("the client went away");
    }
    ChannelFuture f = channel.writeAndFlush(new DefaultHttpContent(chunk));
    if (!f.awaitUninterruptibly(WRITE_TIMEOUT_SECONDS, TimeUnit.SECONDS) || !f.isSuccess()) {
      abort();
      throw new IOException("the client did not take the response", f.cause());
    }
  }

  /** Ends the body; the connection serves its next request (or closes, as the request asked). */
  void finish() {
    if (ended) {
      return;
    }
    ended = true;
    ChannelFuture last = channel.writeAndFlush(LastHttpContent.EMPTY_LAST_CONTENT);
    channel.eventLoop().execute(() -> handler.endStream(ex, keepAlive, status, last));
  }

  /** Ends the response by closing the connection (a failure after the head was sent). */
  void abort() {
    if (ended) {
      return;
    }
    ended = true;
    channel.eventLoop().execute(() -> handler.endStream(ex, false, status, null));
  }
}
