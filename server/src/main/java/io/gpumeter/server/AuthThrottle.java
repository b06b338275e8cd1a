package io.gpumeter.server;

import io.gpumeter.metering.Ticker;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.net.Inet6Address;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.UnknownHostException;
import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * Throttles failed authentications per client address: after {@code maxFailures} failures (401s:
 * missing, malformed, unknown or revoked API keys, wrong admin tokens) within a window, every
 * further request from that address that needs a key or the admin token gets 429 with {@code
 * Retry-After} until the window ends, before any database lookup. So a client cycling through
 * distinct wrong keys, each of which would be a cache miss and a database lookup, costs at most
 * {@code maxFailures} lookups per window per address.
 *
 * <p>Windows: fixed, opened by an address's first failure and lasting {@code window}; the failures
 * of an expired window are forgotten at the next one. A request refused with 429 does not count as
 * a failure, so {@code Retry-After} is exact. A success does not reset the count (a guesser holding
 * one valid key could otherwise reset it at will). While an address is throttled its valid keys are
 * refused too: the address is all that is known before the lookup. Clients behind one NAT share the
 * count.
 *
 * <p>Addresses: IPv4 by address, IPv6 by /64 prefix (one host usually owns a whole /64). At most
 * {@link #MAX_ADDRESSES} addresses are tracked; when full, expired windows are purged, and if it is
 * still full a new address is not tracked until room is made (the map never grows unbounded).
 *
 * <p>Concurrency: a {@link ConcurrentHashMap} of windows, each updated under its own lock; the
 * check on every authenticated request is one map read (no allocation for IPv4). Time comes from an
 * injected {@link Ticker}.
 */
final class AuthThrottle {
  /** Addresses tracked at most. */
  static final int MAX_ADDRESSES = 100_000;

  static final String CODE = "too_many_failed_authentications";

  private final int maxFailures;
  private final long windowNanos;
  private final int maxAddresses;
  private final Ticker ticker;
  private final ConcurrentHashMap<Object, Window> windows = new ConcurrentHashMap<>();

  private static final class Window {
    long start;
    int failures;

    Window(long start) {
      this.start = start;
    }
  }

  /**
   * @throws IllegalArgumentException if {@code maxFailures} or {@code maxAddresses} is below 1 or
   *     the window is not positive
   */
  AuthThrottle(int maxFailures, Duration window, int maxAddresses, Ticker ticker) {
    if (maxFailures < 1) {
      throw new IllegalArgumentException("maxFailures must be >= 1, was " + maxFailures);
    }
    if (window == null || window.isNegative() || window.isZero()) {
      throw new IllegalArgumentException("window must be positive, was " + window);
    }
    if (maxAddresses < 1) {
      throw new IllegalArgumentException("maxAddresses must be >= 1, was " + maxAddresses);
    }
    this.maxFailures = maxFailures;
    this.windowNanos = window.toNanos();
    this.maxAddresses = maxAddresses;
    this.ticker = ticker;
  }

  AuthThrottle(int maxFailures, Duration window) {
    this(maxFailures, window, MAX_ADDRESSES, Ticker.system());
  }

  /**
   * @throws ApiException 429 {@code rate_limit_error} with {@code Retry-After} (whole seconds,
   *     rounded up) if {@code address} is throttled
   */
  void check(SocketAddress address) {
    long left = blockedForNanos(address);
    if (left > 0) {
      long seconds = Math.max(1, (left + TimeUnit.SECONDS.toNanos(1) - 1) / 1_000_000_000L);
      throw new ApiException(
              HttpResponseStatus.TOO_MANY_REQUESTS,
              ApiException.RATE_LIMIT,
              "Too many failed authentications from your address; retry in "
                  + seconds
                  + " s with a valid API key.",
              null,
              CODE)
          .withHeader(HttpHeaderNames.RETRY_AFTER, Long.toString(seconds));
    }
  }

  /** Nanoseconds until {@code address} may try again; 0 if it may now. */
  long blockedForNanos(SocketAddress address) {
    if (windows.isEmpty()) {
      return 0;
    }
    Window w = windows.get(key(address));
    if (w == null) {
      return 0;
    }
    long now = ticker.read();
    synchronized (w) {
      long left = w.start + windowNanos - now;
      return w.failures >= maxFailures && left > 0 ? left : 0;
    }
  }

  /** Counts one failed authentication from {@code address}. Thread safe. */
  void recordFailure(SocketAddress address) {
    Object key = key(address);
    long now = ticker.read();
    Window w = windows.get(key);
    if (w == null) {
      if (windows.size() >= maxAddresses) {
        purgeExpired(now);
        if (windows.size() >= maxAddresses) {
          return;
        }
      }
      w = windows.computeIfAbsent(key, k -> new Window(now));
    }
    synchronized (w) {
      if (now - w.start >= windowNanos) {
        w.start = now;
        w.failures = 0;
      }
      if (w.failures < Integer.MAX_VALUE) {
        w.failures++;
      }
    }
  }

  /** Addresses tracked now (for tests). */
  int trackedAddresses() {
    return windows.size();
  }

  private void purgeExpired(long now) {
    windows
        .values()
        .removeIf(
            w -> {
              synchronized (w) {
                return now - w.start >= windowNanos;
              }
            });
  }

  /** The address without the port; IPv6 cut to its /64 prefix. */
  static Object key(SocketAddress address) {
    if (address instanceof InetSocketAddress inet && inet.getAddress() != null) {
      InetAddress a = inet.getAddress();
      if (a instanceof Inet6Address) {
        byte[] bytes = Arrays.copyOf(a.getAddress(), 16);
        Arrays.fill(bytes, 8, 16, (byte) 0);
        try {
          return InetAddress.getByAddress(bytes);
        } catch (UnknownHostException e) {
          throw new IllegalStateException("16 bytes are an IPv6 address", e);
        }
      }
      return a;
    }
    return String.valueOf(address);
  }
}
