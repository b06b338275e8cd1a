package io.gpumeter.batching;

/**
 * Memory-time of one sequence: the KV-cache bytes it held in each step, times that step's measured
 * nanoseconds, summed over its steps (byte-nanoseconds), and the most bytes it held at once.
 *
 * <p>What a sequence "holds" in a step is the cache of its positions after the step: {@code (cached
 * tokens after the step) × bytes per token} (see {@code model.KvFootprint}). Slots the cache
 * reserves but the sequence has not reached are not counted: they are free for the next sequence of
 * that slot's length.
 *
 * <p><b>Exactness and bound:</b> each product and each sum is exact in a {@code long} while the
 * total stays below {@link Long#MAX_VALUE} (9.2 × 10<sup>18</sup> byte-ns). A sequence holds at
 * most {@code contextLength × bytesPerToken} and is in steps for at most its timeout, so the total
 * is at most {@code contextLength × bytesPerToken × timeout}: for the demo model 1 024 × 4 096 B ×
 * 300 s (the default timeout) = 1.3 × 10<sup>18</sup>, inside the bound. A model and timeout past
 * the bound (for example 40 GB of KV held for 4 minutes) saturates at {@link Long#MAX_VALUE}
 * instead of wrapping, and {@link #saturated()} says so; the record then carries that value.
 */
final class KvMeter {
  private long byteNs;
  private long peakBytes;
  private boolean saturated;

  /** Adds one step in which the sequence held {@code bytes} for {@code stepNs} nanoseconds. */
  void add(long bytes, long stepNs) {
    if (bytes < 0 || stepNs < 0) {
      throw new IllegalArgumentException("negative KV step: " + bytes + " B, " + stepNs + " ns");
    }
    peakBytes = Math.max(peakBytes, bytes);
    long hi = Math.multiplyHigh(bytes, stepNs);
    long product = bytes * stepNs;
    if (hi != 0 || product < 0) {
      saturate();
      return;
    }
    long sum = byteNs + product;
    if (sum < 0) { // both are non-negative, so a negative sum is an overflow
      saturate();
      return;
    }
    byteNs = sum;
  }

  private void saturate() {
    byteNs = Long.MAX_VALUE;
    saturated = true;
  }

  long byteNs() {
    return byteNs;
  }

  long peakBytes() {
    return peakBytes;
  }

  boolean saturated() {
    return saturated;
  }
}
