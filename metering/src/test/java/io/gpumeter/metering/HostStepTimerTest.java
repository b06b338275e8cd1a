package io.gpumeter.metering;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

class HostStepTimerTest {
  @Test
  void measuresTheSpanOnTheInjectedTicker() {
    AtomicLong now = new AtomicLong(1_000);
    HostStepTimer timer = new HostStepTimer(now::get, TimerInfo.cpu("test"));
    StepTimer.Span span = timer.begin();
    now.addAndGet(12_345);
    assertThat(span.end()).isEqualTo(12_345);
    assertThat(timer.info().timerKind()).isEqualTo("host");
  }

  @Test
  void spanEndsExactlyOnceAndSpansDoNotOverlap() {
    HostStepTimer timer = new HostStepTimer(() -> 0, TimerInfo.cpu("test"));
    StepTimer.Span span = timer.begin();
    assertThatThrownBy(timer::begin).isInstanceOf(IllegalStateException.class);
    span.end();
    assertThatThrownBy(span::end).isInstanceOf(IllegalStateException.class);
  }

  @Test
  void aTickerThatStepsBackMeasuresZeroNeverANegativeSpan() {
    AtomicLong now = new AtomicLong(10_000);
    HostStepTimer timer = new HostStepTimer(now::get, TimerInfo.cpu("test"));
    StepTimer.Span span = timer.begin();
    now.set(9_000);
    assertThat(span.end()).isZero();
  }

  @Test
  void theReusedSpanMeasuresFromItsOwnBegin() {
    AtomicLong now = new AtomicLong();
    HostStepTimer timer = new HostStepTimer(now::get, TimerInfo.cpu("test"));
    StepTimer.Span first = timer.begin();
    now.addAndGet(700);
    assertThat(first.end()).isEqualTo(700);
    now.addAndGet(5_000); // idle between steps: not measured
    StepTimer.Span second = timer.begin();
    now.addAndGet(300);
    assertThat(second.end()).isEqualTo(300);
  }
}
