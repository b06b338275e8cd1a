package io.gpumeter.server;

import io.gpumeter.metering.Ticker;
import io.prometheus.metrics.config.PrometheusProperties;
import io.prometheus.metrics.core.datapoints.DistributionDataPoint;
import io.prometheus.metrics.core.metrics.CounterWithCallback;
import io.prometheus.metrics.core.metrics.Histogram;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.AtomicReferenceArray;

/**
 * Responses sent: one counter per status code ({@code gpumeter_http_responses_total{code}}, read by
 * a callback at scrape time) and the latency histogram {@code
 * gpumeter_http_request_duration_seconds{route,status_class}}.
 *
 * <p>Label cardinality is bounded: {@code route} is one of {@link #ROUTES} (every unknown path is
 * {@code other}), {@code status_class} one of {@code 1xx}..{@code 5xx}. A series is created on its
 * first response and kept in an array, so counting a response allocates nothing after that.
 */
final class HttpMetrics {
  /** Route labels; the index is what {@link #route} returns. */
  static final String[] ROUTES = {
    "/v1/completions",
    "/v1/usage",
    "/v1/models",
    "/v1/models/{id}",
    "/healthz",
    "/readyz",
    "/metrics",
    "/admin/reconcile",
    "other"
  };

  private static final String[] STATUS_CLASSES = {"1xx", "2xx", "3xx", "4xx", "5xx"};

  /**
   * Request latency buckets in seconds: from a probe answered on the event loop (about a
   * millisecond) to a long completion on a CPU (minutes).
   */
  static final double[] LATENCY_BUCKETS = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120
  };

  private final AtomicLongArray byStatus = new AtomicLongArray(600);
  private final Ticker ticker;
  private final Histogram latency;
  private final AtomicReferenceArray<DistributionDataPoint> latencyByRouteAndClass =
      new AtomicReferenceArray<>(ROUTES.length * STATUS_CLASSES.length);

  HttpMetrics(PrometheusRegistry registry, PrometheusProperties properties, Ticker ticker) {
    this.ticker = ticker;
    CounterWithCallback.builder(properties)
        .name("gpumeter_http_responses_total")
        .help("HTTP responses sent, by status.")
        .labelNames("code")
        .callback(
            cb -> {
              for (int s = 100; s < 600; s++) {
                long n = byStatus.get(s);
                if (n != 0) {
                  cb.call(n, Integer.toString(s));
                }
              }
            })
        .register(registry);
    this.latency =
        Histogram.builder(properties)
            .name("gpumeter_http_request_duration_seconds")
            .help(
                "Time from dispatching a request to sending its response, by route and status"
                    + " class (requests whose client left first are not observed).")
            .labelNames("route", "status_class")
            .classicOnly()
            .classicUpperBounds(LATENCY_BUCKETS)
            .withoutExemplars()
            .register(registry);
  }

  /** The clock requests are timed with (and time to first token measured from). */
  long now() {
    return ticker.read();
  }

  /**
   * Counts one response and observes its latency.
   *
   * @param path the request's path (mapped to a bounded {@code route} label)
   * @param status the response's status code; outside {@code [100, 600)} it is not counted
   * @param startNanos when the request was dispatched, on {@link #now()}'s clock
   */
  void responded(String path, int status, long startNanos) {
    if (status < 100 || status >= 600) {
      return;
    }
    byStatus.incrementAndGet(status);
    long elapsed = Math.max(0, ticker.read() - startNanos);
    series(route(path), status / 100 - 1).observe(elapsed / 1e9);
  }

  private DistributionDataPoint series(int route, int statusClass) {
    int i = route * STATUS_CLASSES.length + statusClass;
    DistributionDataPoint p = latencyByRouteAndClass.get(i);
    if (p == null) {
      // labelValues returns the same data point for the same labels, so a race only looks it up
      // twice.
      p = latency.labelValues(ROUTES[route], STATUS_CLASSES[statusClass]);
      latencyByRouteAndClass.set(i, p);
    }
    return p;
  }

  /** The index in {@link #ROUTES} of the route serving {@code path}. */
  static int route(String path) {
    return switch (path) {
      case "/v1/completions" -> 0;
      case "/v1/usage" -> 1;
      case "/v1/models" -> 2;
      case "/healthz" -> 4;
      case "/readyz" -> 5;
      case "/metrics" -> 6;
      case "/admin/reconcile" -> 7;
      default -> path.startsWith("/v1/models/") ? 3 : ROUTES.length - 1;
    };
  }
}
