package io.gpumeter.batching;

import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * How many requests each API key has waiting for one model, bounded per key ({@link
 * SchedulerConfig#maxQueuedPerKey()}): one key flooding a model is refused before the queue is full
 * for the others. The replicas of a model share one instance, so the bound holds for the model as a
 * whole, not per device. Thread-safe: a count per key in a {@link ConcurrentHashMap}, removed when
 * it drops to zero.
 */
public final class KeyShares {
  private final int maxPerKey;
  private final ConcurrentHashMap<Long, AtomicInteger> queued = new ConcurrentHashMap<>();

  private KeyShares(int maxPerKey) {
    this.maxPerKey = maxPerKey;
  }

  /**
   * The shares {@code config} asks for: each key at most {@link SchedulerConfig#maxQueuedPerKey()}
   * waiting, unless that is not below the queue capacity (then only the capacity bounds).
   */
  public static KeyShares of(SchedulerConfig config) {
    int max = config.maxQueuedPerKey();
    return new KeyShares(max >= config.queueCapacity() ? Integer.MAX_VALUE : max);
  }

  /** The most requests one key may have waiting ({@link Integer#MAX_VALUE}: no bound per key). */
  public int maxPerKey() {
    return maxPerKey;
  }

  /** Counts one more waiting request for {@code key}; false if the key already has its share. */
  boolean tryAcquire(long key) {
    if (maxPerKey == Integer.MAX_VALUE) {
      return true;
    }
    boolean[] admitted = new boolean[1];
    queued.compute(
        key,
        (k, n) -> {
          AtomicInteger count = n == null ? new AtomicInteger() : n;
          if (count.get() < maxPerKey) {
            count.incrementAndGet();
            admitted[0] = true;
          }
          return count.get() == 0 ? null : count;
        });
    return admitted[0];
  }

  /** A waiting request of {@code key} left the queue (admitted, retired or cancelled). */
  void release(long key) {
    if (maxPerKey == Integer.MAX_VALUE) {
      return;
    }
    queued.computeIfPresent(key, (k, n) -> n.decrementAndGet() <= 0 ? null : n);
  }

  /** Requests {@code key} has waiting now. */
  public int waiting(long key) {
    AtomicInteger n = queued.get(key);
    return n == null ? 0 : n.get();
  }
}
