package io.gpumeter.server;

import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.socket.ChannelInputShutdownEvent;
import io.netty.channel.socket.SocketChannel;
import io.netty.util.ReferenceCountUtil;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Caps open connections, in total ({@code http.max_connections}) and per client address ({@code
 * http.max_connections_per_address}). The server's channel initializer asks {@link #admit} for each
 * accepted connection, before it builds the HTTP pipeline.
 *
 * <p><b>Over a cap</b> the connection is refused at accept, before anything is read: it gets a
 * ready-made {@code 503} with {@code Retry-After} and {@code Connection: close} in the OpenAI error
 * shape, its output is shut down, whatever the client sends is read and dropped (so a client still
 * sending its request reads the 503 instead of a reset), and it is closed after {@link
 * #LINGER_MILLIS} or when the client closes, whichever is first. A refused connection is not
 * counted. Answering at accept rather than after the request keeps a refused connection from
 * costing a request parse, and it is the only choice that also bounds the clients that never send.
 *
 * <p><b>Concurrency:</b> any event loop may call it; the total is one {@link AtomicInteger}, and
 * the per-address counts live in a {@link ConcurrentHashMap} whose entries are removed when they
 * reach zero, so idle addresses cost nothing.
 */
final class ConnectionLimiter {
  private static final Logger log = LoggerFactory.getLogger(ConnectionLimiter.class);

  /** How long a refused connection stays half-open so the client can read the 503. */
  static final long LINGER_MILLIS = 1_000;

  static final String RETRY_AFTER_SECONDS = "1";

  private static final byte[] REFUSAL =
      ("HTTP/1.1 503 Service Unavailable\r\n"
              + "Content-Type: application/json\r\n"
              + "Retry-After: "
              + RETRY_AFTER_SECONDS
              + "\r\n"
              + "Connection: close\r\n"
              + "Content-Length: %d\r\n"
              + "\r\n"
              + "%s")
          .formatted(refusalBody().length(), refusalBody())
          .getBytes(StandardCharsets.US_ASCII);

  private final int maxTotal;
  private final int maxPerAddress;
  private final AtomicInteger open = new AtomicInteger();
  private final ConcurrentHashMap<InetAddress, AtomicInteger> perAddress =
      new ConcurrentHashMap<>();
  private final AtomicLong refused = new AtomicLong();
  private final AtomicLong lastRefusalLog = new AtomicLong(Long.MIN_VALUE);

  ConnectionLimiter(int maxTotal, int maxPerAddress) {
    this.maxTotal = maxTotal;
    this.maxPerAddress = maxPerAddress;
  }

  private static String refusalBody() {
    return "{\"error\":{\"message\":\"Too many open connections; retry later.\","
        + "\"type\":\"server_error\",\"param\":null,\"code\":\"too_many_connections\"}}";
  }

  /** Connections now counted against the caps. */
  int open() {
    return open.get();
  }

  /**
   * Counts a newly accepted connection in, until it closes, and returns true; or, over a cap,
   * answers it with the 503 and returns false: the caller then adds nothing to its pipeline.
   */
  boolean admit(Channel ch) {
    InetAddress address = addressOf(ch.remoteAddress());
    String over = admit(address);
    if (over == null) {
      ch.closeFuture().addListener(f -> release(address));
      return true;
    }
    refused.incrementAndGet();
    logRefusal(address, over);
    ch.pipeline().addLast("refused", new Refused());
    ch.writeAndFlush(Unpooled.wrappedBuffer(REFUSAL))
        .addListener(
            f -> {
              if (f.isSuccess() && ch instanceof SocketChannel s) {
                s.shutdownOutput();
              } else {
                ch.close();
              }
            });
    ch.eventLoop().schedule(() -> ch.close(), LINGER_MILLIS, TimeUnit.MILLISECONDS);
    return false;
  }

  /** Counts the connection in; null if admitted, else which cap it is over. */
  private String admit(InetAddress address) {
    if (open.incrementAndGet() > maxTotal) {
      open.decrementAndGet();
      return "http.max_connections=" + maxTotal;
    }
    if (address == null) {
      return null;
    }
    boolean[] over = new boolean[1];
    perAddress.compute(
        address,
        (a, n) -> {
          AtomicInteger count = n == null ? new AtomicInteger() : n;
          if (count.get() >= maxPerAddress) {
            over[0] = true;
          } else {
            count.incrementAndGet();
          }
          return count.get() == 0 ? null : count;
        });
    if (over[0]) {
      open.decrementAndGet();
      return "http.max_connections_per_address=" + maxPerAddress;
    }
    return null;
  }

  private void release(InetAddress address) {
    open.decrementAndGet();
    if (address != null) {
      perAddress.computeIfPresent(address, (a, n) -> n.decrementAndGet() == 0 ? null : n);
    }
  }

  /** At most one line a second, however many are refused. */
  private void logRefusal(InetAddress address, String cap) {
    long now = System.nanoTime();
    long last = lastRefusalLog.get();
    if ((last == Long.MIN_VALUE || now - last >= TimeUnit.SECONDS.toNanos(1))
        && lastRefusalLog.compareAndSet(last, now)) {
      log.warn(
          "refusing connections over {} (from {} this time; {} refused since start)",
          cap,
          address,
          refused.get());
    }
  }

  private static InetAddress addressOf(SocketAddress remote) {
    return remote instanceof InetSocketAddress isa ? isa.getAddress() : null;
  }

  /** What a refused connection's pipeline holds: drops input until the close. */
  private static final class Refused extends ChannelInboundHandlerAdapter {
    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
      ReferenceCountUtil.release(msg);
    }

    @Override
    public void userEventTriggered(ChannelHandlerContext ctx, Object evt) {
      if (evt instanceof ChannelInputShutdownEvent) {
        ctx.close();
      }
      ReferenceCountUtil.release(evt);
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
      ctx.close();
    }
  }
}
