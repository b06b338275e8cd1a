package io.gpumeter.benchmarks.gpu;

import java.util.Arrays;
import java.util.Locale;

/** Order statistics of a series of nanosecond spans, printed in milliseconds. */
record SpanStats(int n, double medianMs, double p10Ms, double p90Ms, double minMs) {

  static SpanStats of(long[] ns) {
    long[] s = ns.clone();
    Arrays.sort(s);
    return new SpanStats(s.length, ms(at(s, 0.5)), ms(at(s, 0.1)), ms(at(s, 0.9)), ms(s[0]));
  }

  private static long at(long[] sorted, double q) {
    int i = (int) Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))));
    return sorted[i];
  }

  private static double ms(long ns) {
    return ns / 1e6;
  }

  /** {@code prefix_median_ms=... prefix_p10_ms=... prefix_p90_ms=...} */
  String fields(String prefix) {
    return String.format(
        Locale.ROOT,
        "%1$s_median_ms=%2$.4f %1$s_p10_ms=%3$.4f %1$s_p90_ms=%4$.4f %1$s_min_ms=%5$.4f",
        prefix,
        medianMs,
        p10Ms,
        p90Ms,
        minMs);
  }
}
