package io.gpumeter.metering;

/**
 * Measures the device time of one model step.
 *
 * <p>Contract: the caller calls {@link #begin()} immediately before launching the step and {@link
 * Span#end()} exactly once, after the step's outputs have reached the host (or after it failed),
 * normally from a {@code finally} block, so a failing step still has its time captured (invariant
 * 2). Implementations are used by one scheduler thread at a time and must not allocate per step on
 * the hot path beyond what the span itself needs.
 */
public interface StepTimer extends AutoCloseable {

  /** Starts measuring one step. */
  Span begin();

  /** Which timer and device produced the numbers. */
  TimerInfo info();

  @Override
  default void close() {}

  /** One step being measured. */
  interface Span {
    /**
     * Ends the measurement and returns the step's device time in nanoseconds, never negative.
     * Calling it twice is an error.
     */
    long end();
  }
}
