package io.gpumeter.benchmarks;

import java.util.Arrays;

/**
 * Pre-allocated log of nanosecond samples with one writer thread; keeps the last {@code capacity}
 * samples. Recording allocates nothing.
 */
final class LatencyLog {
  private final long[] samples;
  private final int mask;
  private volatile long count;

  /**
   * @param capacityPow2 capacity, a power of two
   */
  LatencyLog(int capacityPow2) {
    if (Integer.bitCount(capacityPow2) != 1) {
      throw new IllegalArgumentException("capacity must be a power of two, was " + capacityPow2);
    }
    samples = new long[capacityPow2];
    mask = capacityPow2 - 1;
  }

  void record(long nanos) {
    long c = count;
    samples[(int) (c & mask)] = nanos;
    count = c + 1;
  }

  long count() {
    return count;
  }

  /** Samples recorded from sequence number {@code from} on (at most the last capacity). */
  long[] since(long from) {
    long to = count;
    long first = Math.max(from, to - samples.length);
    long[] out = new long[(int) Math.max(0, to - first)];
    for (int i = 0; i < out.length; i++) {
      out[i] = samples[(int) ((first + i) & mask)];
    }
    return out;
  }

  /** {@code "n=.. p50=.. p90=.. p99=.. p99.9=.. max=.."} in microseconds, of sorted copies. */
  static String summary(long[] values) {
    if (values.length == 0) {
      return "n=0";
    }
    long[] v = values.clone();
    Arrays.sort(v);
    return String.format(
        java.util.Locale.ROOT,
        "n=%d p50=%.2fus p90=%.2fus p99=%.2fus p99.9=%.2fus max=%.2fus",
        v.length,
        pct(v, 0.50) / 1e3,
        pct(v, 0.90) / 1e3,
        pct(v, 0.99) / 1e3,
        pct(v, 0.999) / 1e3,
        v[v.length - 1] / 1e3);
  }

  private static double pct(long[] sorted, double p) {
    int idx = (int) Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
    return sorted[idx];
  }

  static long[] concat(long[]... parts) {
    int n = 0;
    for (long[] p : parts) {
      n += p.length;
    }
    long[] out = new long[n];
    int at = 0;
    for (long[] p : parts) {
      System.arraycopy(p, 0, out, at, p.length);
      at += p.length;
    }
    return out;
  }
}
