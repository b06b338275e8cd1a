package io.gpumeter.benchmarks;

import io.gpumeter.metering.StepTimer;
import io.gpumeter.metering.TimerInfo;
import java.util.SplittableRandom;

/**
 * A step timer that reads no clock: each span "measures" the next of a fixed, pre-built cycle of
 * step times (0.5 to 2 ms, seeded), so the scheduler's apportioning does its real work (uneven
 * totals leave up to n-1 nanoseconds of remainder to hand out) while the timer itself costs nothing
 * and allocates nothing.
 */
final class ReplayStepTimer implements StepTimer {
  private static final int CYCLE = 4096;
  private static final TimerInfo INFO = new TimerInfo("replay", "cpu", "noop", "", "", "");

  private final long[] durations = new long[CYCLE];
  private int next;
  private final Span span = () -> durations[next++ & (CYCLE - 1)];

  ReplayStepTimer(long seed) {
    SplittableRandom random = new SplittableRandom(seed);
    for (int i = 0; i < CYCLE; i++) {
      durations[i] = random.nextLong(500_000L, 2_000_000L);
    }
  }

  @Override
  public Span begin() {
    return span;
  }

  @Override
  public TimerInfo info() {
    return INFO;
  }
}
