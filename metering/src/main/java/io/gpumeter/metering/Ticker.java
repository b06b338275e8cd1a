package io.gpumeter.metering;

/** A monotonic nanosecond source; injected so tests can drive time deterministically. */
@FunctionalInterface
public interface Ticker {
  long read();

  static Ticker system() {
    return System::nanoTime;
  }
}
