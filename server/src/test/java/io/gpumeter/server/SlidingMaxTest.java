package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/**
 * The exact sliding maximum behind {@code gpumeter_step_max_seconds}, on a clock the test moves.
 */
class SlidingMaxTest {
  private static final long SECOND = 1_000_000_000L;

  private final AtomicLong now = new AtomicLong(1_000 * SECOND);
  private final SlidingMax max = new SlidingMax(now::get, 6, 10 * SECOND);

  @Test
  void theMaximumIsTheExactValueAndStaysForFiftyToSixtySeconds() {
    assertThat(max.max()).as("nothing observed").isZero();
    max.observe(1_234_567);
    max.observe(7);
    max.observe(-5); // ignored
    assertThat(max.max()).isEqualTo(1_234_567);
    now.addAndGet(49 * SECOND);
    max.observe(999);
    assertThat(max.max()).as("49 s later: still in the window").isEqualTo(1_234_567);
    now.addAndGet(11 * SECOND); // 60 s after the first: its slot left the window
    assertThat(max.max()).isEqualTo(999);
    now.addAndGet(60 * SECOND);
    assertThat(max.max()).as("a minute without steps").isZero();
  }

  @Test
  void aSlotReusedAfterTheWindowForgetsItsOldMaximum() {
    max.observe(5_000);
    now.addAndGet(60 * SECOND); // the same slot, one window later
    max.observe(10);
    assertThat(max.max()).isEqualTo(10);
  }

  @Test
  void concurrentObserversLoseNoMaximum() throws Exception {
    List<Thread> threads = new ArrayList<>();
    for (int t = 0; t < 4; t++) {
      int base = t;
      threads.add(
          new Thread(
              () -> {
                for (int i = 0; i < 10_000; i++) {
                  max.observe(i * 4L + base);
                }
              }));
    }
    for (Thread t : threads) {
      t.start();
    }
    for (Thread t : threads) {
      t.join();
    }
    assertThat(max.max()).isEqualTo(9_999 * 4L + 3);
  }

  @Test
  void aWindowOfFewerThanTwoSlotsIsRefused() {
    assertThatThrownBy(() -> new SlidingMax(now::get, 1, SECOND))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("1 × ");
  }
}
