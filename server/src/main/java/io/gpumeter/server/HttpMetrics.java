package io.gpumeter.server;

import java.util.concurrent.atomic.AtomicLongArray;

/** Responses sent, by status code: one counter per code, no allocation per request. */
final class HttpMetrics {
  private final AtomicLongArray byStatus = new AtomicLongArray(600);

  void count(int status) {
    if (status >= 100 && status < 600) {
      byStatus.incrementAndGet(status);
    }
  }

  /** Calls {@code out} for every status with a non-zero count, in ascending order. */
  void forEach(StatusCount out) {
    for (int s = 100; s < 600; s++) {
      long n = byStatus.get(s);
      if (n != 0) {
        out.accept(s, n);
      }
    }
  }

  long get(int status) {
    return byStatus.get(status);
  }

  @FunctionalInterface
  interface StatusCount {
    void accept(int status, long count);
  }
}
