package io.gpumeter.server;

import io.gpumeter.metering.Ticker;
import java.util.Objects;

/**
 * The exact largest value observed over a sliding window (the {@code gpumeter_step_max_seconds}
 * gauge): not a histogram bucket's bound, the value itself.
 *
 * <p>Window: {@code slots} slots of {@code slotNanos} each on the ticker's clock; {@link #max()} is
 * the largest value observed in the current slot and the {@code slots - 1} before it, so a value
 * stays visible for between {@code (slots - 1) × slotNanos} and {@code slots × slotNanos} after it
 * was observed (50–60 s for the server's 6 × 10 s), then drops out. Every scrape in that time sees
 * it, whichever Prometheus (of an HA pair) scrapes; no scrape resets it.
 *
 * <p>Concurrency: {@link #observe} (a scheduler thread per replica of the model, once per step) and
 * {@link #max()} (a scrape) take this object's monitor for a few array reads and writes; nothing is
 * allocated.
 */
final class SlidingMax {
  private final Ticker ticker;
  private final long slotNanos;
  private final long[] slotIndex;
  private final long[] slotMax;

  /**
   * @throws IllegalArgumentException if {@code slots < 2} or {@code slotNanos <= 0}
   */
  SlidingMax(Ticker ticker, int slots, long slotNanos) {
    this.ticker = Objects.requireNonNull(ticker, "ticker");
    if (slots < 2 || slotNanos <= 0) {
      throw new IllegalArgumentException(
          "a sliding max needs at least 2 slots of a positive width, got "
              + slots
              + " × "
              + slotNanos
              + " ns");
    }
    this.slotNanos = slotNanos;
    this.slotIndex = new long[slots];
    this.slotMax = new long[slots];
    java.util.Arrays.fill(slotIndex, Long.MIN_VALUE);
  }

  /** Observes {@code value} (non-negative; a negative one is ignored) now. */
  synchronized void observe(long value) {
    if (value < 0) {
      return;
    }
    long index = Math.floorDiv(ticker.read(), slotNanos);
    int slot = (int) Math.floorMod(index, (long) slotIndex.length);
    if (slotIndex[slot] != index) {
      slotIndex[slot] = index;
      slotMax[slot] = value;
    } else if (value > slotMax[slot]) {
      slotMax[slot] = value;
    }
  }

  /** The largest value observed in the window, or 0 when none was. */
  synchronized long max() {
    long index = Math.floorDiv(ticker.read(), slotNanos);
    long oldest = index - slotIndex.length + 1;
    long max = 0;
    for (int i = 0; i < slotIndex.length; i++) {
      if (slotIndex[i] >= oldest && slotIndex[i] <= index && slotMax[i] > max) {
        max = slotMax[i];
      }
    }
    return max;
  }
}
