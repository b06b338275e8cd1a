package io.gpumeter.server;

import io.gpumeter.billing.Balance;
import io.gpumeter.metering.UsageRecord;
import io.netty.handler.codec.http.DefaultHttpHeaders;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaders;
import io.netty.handler.codec.http.HttpVersion;
import java.util.Optional;

/**
 * The receipt of a streamed answer (server/README.md, "Receipts"). Its head leaves before the cost
 * exists, so it carries what is known then, and the cost goes at the end:
 *
 * <ul>
 *   <li>head: the remaining funds ({@code x-ratelimit-remaining-credit-micros}, {@code
 *       x-ratelimit-remaining-allowance-device-ns}) from the {@link BalanceCache}; the head waits
 *       for the balance (loaded on the blocking pool while the request generates; the text that
 *       arrives meanwhile waits in {@link SseStream}), at most {@link BalanceCache#LOAD_WAIT},
 *       after which it goes without them (database unreachable). For HTTP/1.1 it also declares
 *       {@code Trailer: x-gpumeter-device-time-ns, x-gpumeter-cost-micros};
 *   <li>end: those two as chunked trailers in the last chunk (after {@code [DONE]}), equal to the
 *       usage event's {@code device_time_ns} and {@code cost} and to the stored charge (DESIGN.md
 *       invariant 8); the cost trailer only when the record is priced. A stream that ends with an
 *       error event has no trailers.
 * </ul>
 */
final class StreamReceipts {
  private StreamReceipts() {}

  static final String TRAILER_NAMES =
      CompletionsEndpoint.X_DEVICE_TIME_NS + ", " + Receipt.X_COST_MICROS;

  /** Adds the head's receipt headers to the exchange's next answer (its stream head). */
  static void head(Exchange ex, Optional<Balance> balance) {
    balance.ifPresent(b -> Receipt.addRateLimitHeaders(ex, b));
    if (ex.request().protocolVersion().equals(HttpVersion.HTTP_1_1)) {
      ex.header(HttpHeaderNames.TRAILER, TRAILER_NAMES);
    }
  }

  /**
   * The trailers of a stream whose charge is durable: device time and, when priced, the cost; null
   * for an HTTP/1.0 answer (not chunked: no trailers).
   */
  static HttpHeaders trailers(Exchange ex, UsageRecord usage, Receipt receipt) {
    if (!ex.request().protocolVersion().equals(HttpVersion.HTTP_1_1)) {
      return null;
    }
    HttpHeaders t = new DefaultHttpHeaders();
    t.set(CompletionsEndpoint.X_DEVICE_TIME_NS, Long.toString(usage.deviceNs()));
    if (receipt.cost() != null) {
      t.set(Receipt.X_COST_MICROS, Long.toString(receipt.cost().roundedMicros()));
    }
    return t;
  }
}
