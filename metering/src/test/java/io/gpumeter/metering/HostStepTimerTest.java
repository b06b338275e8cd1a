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
  void aStepThatThrowsIsStillMeasured() {
    AtomicLong now = new AtomicLong();
    HostStepTimer timer = new HostStepTimer(now::get, TimerInfo.cpu("test"));
    long measured = -1;
    StepTimer.Span span = timer.begin();
    try {
      now.addAndGet(500);
      throw new IllegalStateException("step failed");
    } catch (IllegalStateException expected) {
      // the scheduler fails the batch
    } finally {
      measured = span.end();
    }
    assertThat(measured).isEqualTo(500);
  }
}
