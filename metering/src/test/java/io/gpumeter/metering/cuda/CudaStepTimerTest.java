package io.gpumeter.metering.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.metering.StepTimer;
import io.gpumeter.metering.TimerInfo;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/**
 * The CUDA timer's own logic (pool, context, fallback, conversion) against {@link FakeDriverApi},
 * so it runs on machines without a GPU. {@link CudaStepTimerGpuTest} runs the same timer on a real
 * device.
 */
class CudaStepTimerTest {
  private final FakeDriverApi driver = new FakeDriverApi();
  private final AtomicLong clock = new AtomicLong(1_000_000L);

  private CudaStepTimer open() {
    return CudaStepTimer.open(CudaStepTimer.Config.forDevice(0), driver, clock::get);
  }

  @Test
  void spanIsTheEventTimeInNanoseconds() {
    try (CudaStepTimer timer = open()) {
      driver.elapsedMs = 1.25f;
      StepTimer.Span span = timer.begin();
      clock.addAndGet(9_000_000L); // the host clock is not used when the events work
      assertThat(span.end()).isEqualTo(1_250_000L);
      assertThat(timer.stats().fallbackSpans()).isZero();
    }
  }

  @Test
  void millisecondsConvertToTheNearestNanosecond() {
    assertThat(CudaStepTimer.toNanos(0f)).isZero();
    assertThat(CudaStepTimer.toNanos(0.0005f)).isEqualTo(500L); // about the event resolution
    assertThat(CudaStepTimer.toNanos(1.5f)).isEqualTo(1_500_000L);
    assertThat(CudaStepTimer.toNanos(2500f)).isEqualTo(2_500_000_000L);
    // float ms keep ~7 significant digits: 1234.5677 ms is within 100 ns of the exact value
    assertThat(CudaStepTimer.toNanos(1234.5677f)).isBetween(1_234_567_600L, 1_234_567_800L);
  }

  @Test
  void infoCarriesDeviceProvenance() {
    try (CudaStepTimer timer =
        CudaStepTimer.open(
            CudaStepTimer.Config.forDevice(0).withCudaVersion("12.8"), driver, clock::get)) {
      TimerInfo info = timer.info();
      assertThat(info.timerKind()).isEqualTo("cuda-event");
      assertThat(info.device()).isEqualTo("cuda:0");
      assertThat(info.deviceName()).isEqualTo("Fake H100 80GB HBM3");
      assertThat(info.deviceUuid()).isEqualTo("GPU-a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf");
      assertThat(info.driverVersion()).isEqualTo("13.0");
      assertThat(info.cudaVersion()).isEqualTo("12.8");
    }
  }

  @Test
  void eventsBlockWithoutSpinningAndKeepTiming() {
    try (CudaStepTimer timer = open()) {
      timer.begin().end();
      assertThat(driver.createFlags)
          .isNotEmpty()
          .allMatch(f -> f == 1); // CU_EVENT_BLOCKING_SYNC only
    }
  }

  @Test
  void tenThousandSpansReuseOnePairOfEvents() {
    CudaStepTimer timer = open();
    for (int i = 0; i < 10_000; i++) {
      StepTimer.Span span = timer.begin();
      assertThat(span.end()).isPositive();
    }
    assertThat(driver.eventsCreated).isEqualTo(2);
    assertThat(timer.stats()).isEqualTo(new CudaStepTimer.Stats(10_000, 0, 2, 1));
    timer.close();
    assertThat(driver.liveEvents).isEmpty();
    assertThat(timer.stats().liveEvents()).isZero();
    assertThat(driver.retained).isEqualTo(1);
    assertThat(driver.released).isEqualTo(1);
    timer.close(); // idempotent
    assertThat(driver.released).isEqualTo(1);
  }

  @Test
  void overlappingSpansTakeTheirOwnEvents() {
    try (CudaStepTimer timer = open()) {
      StepTimer.Span a = timer.begin();
      StepTimer.Span b = timer.begin();
      driver.elapsedMs = 2f;
      assertThat(b.end()).isEqualTo(2_000_000L);
      assertThat(a.end()).isEqualTo(2_000_000L);
      assertThat(timer.stats().liveEvents()).isEqualTo(4);
      assertThat(timer.stats().pooledSpans()).isEqualTo(2);
    }
    assertThat(driver.liveEvents).isEmpty();
  }

  @Test
  void recordsOnTheLegacyDefaultStreamUnlessToldOtherwise() {
    try (CudaStepTimer timer = open()) {
      timer.begin().end();
    }
    assertThat(driver.recordedStreams).containsExactly(0L, 0L);
    driver.recordedStreams.clear();
    try (CudaStepTimer timer =
        CudaStepTimer.open(
            CudaStepTimer.Config.forDevice(0).withStream(0x7f00_1234L), driver, clock::get)) {
      timer.begin().end();
    }
    assertThat(driver.recordedStreams).containsExactly(0x7f00_1234L, 0x7f00_1234L);
  }

  @Test
  void makesTheContextCurrentOnTheSchedulerThread() throws Exception {
    CudaStepTimer timer = open(); // opened on this thread
    AtomicLong measured = new AtomicLong(-1);
    Thread scheduler = new Thread(() -> measured.set(timer.begin().end()), "scheduler");
    scheduler.start();
    scheduler.join();
    assertThat(driver.recordsWithoutCurrentContext).isZero();
    assertThat(measured.get()).isEqualTo(1_250_000L);
    assertThat(timer.stats().fallbackSpans()).isZero();
    timer.close();
  }

  @Test
  void spanEndedInFinallyAfterAFailedStepStillReturnsItsTime() {
    try (CudaStepTimer timer = open()) {
      long measured = -1;
      StepTimer.Span span = timer.begin();
      try {
        throw new IllegalStateException("model step failed");
      } catch (IllegalStateException expected) {
        // the scheduler fails the step's requests; its time is still charged
      } finally {
        measured = span.end();
      }
      assertThat(measured).isEqualTo(1_250_000L);
    }
  }

  @Test
  void brokenContextFallsBackToTheHostClockForThatSpan() {
    try (CudaStepTimer timer = open()) {
      driver.breakAfterStart = true; // the step corrupts the context (a sticky error)
      StepTimer.Span span = timer.begin();
      clock.addAndGet(3_456_789L);
      assertThat(span.end()).isEqualTo(3_456_789L);
      assertThat(timer.stats().fallbackSpans()).isEqualTo(1);
      assertThat(timer.stats().liveEvents()).isZero(); // the failed span's events are not reused

      // Later spans cannot create events either; each still gets the host time.
      StepTimer.Span next = timer.begin();
      clock.addAndGet(1_000L);
      assertThat(next.end()).isEqualTo(1_000L);
      assertThat(timer.stats().fallbackSpans()).isEqualTo(2);
      assertThat(timer.stats().spans()).isEqualTo(2);
    }
  }

  @Test
  void aFailedEndRecordFallsBackAndLaterSpansUseEventsAgain() {
    try (CudaStepTimer timer = open()) {
      driver.failNextEndRecord = FakeDriverApi.INVALID_HANDLE;
      StepTimer.Span span = timer.begin();
      clock.addAndGet(777L);
      assertThat(span.end()).isEqualTo(777L);
      assertThat(timer.begin().end()).isEqualTo(1_250_000L);
      assertThat(timer.stats().fallbackSpans()).isEqualTo(1);
      assertThat(driver.eventsCreated).isEqualTo(4);
    }
    assertThat(driver.liveEvents).isEmpty();
  }

  @Test
  void driverExceptionsAreHandledLikeErrorCodes() {
    try (CudaStepTimer timer = open()) {
      driver.throwOnElapsed = true; // as when JCudaDriver.setExceptionsEnabled(true) was called
      StepTimer.Span span = timer.begin();
      clock.addAndGet(42L);
      assertThat(span.end()).isEqualTo(42L);
      assertThat(timer.stats().fallbackSpans()).isEqualTo(1);
    }
  }

  @Test
  void noEventsMeansHostTimeNotAnException() {
    driver.failEventCreateAfter = 2; // the first pair at open works, a second pair cannot be made
    try (CudaStepTimer timer = open()) {
      StepTimer.Span a = timer.begin();
      StepTimer.Span b = timer.begin(); // needs a second pair
      clock.addAndGet(5_000L);
      assertThat(b.end()).isEqualTo(5_000L);
      assertThat(a.end()).isEqualTo(1_250_000L);
      assertThat(timer.stats().fallbackSpans()).isEqualTo(1);
    }
  }

  @Test
  void endingTwiceIsAnError() {
    try (CudaStepTimer timer = open()) {
      StepTimer.Span span = timer.begin();
      span.end();
      assertThatThrownBy(span::end).isInstanceOf(IllegalStateException.class);
    }
  }

  @Test
  void spanOpenAtCloseIsStillMeasuredAndItsEventsFreed() {
    CudaStepTimer timer = open();
    StepTimer.Span span = timer.begin();
    timer.close();
    assertThat(span.end()).isEqualTo(1_250_000L);
    assertThat(driver.liveEvents).isEmpty();
    assertThatThrownBy(timer::begin).isInstanceOf(IllegalStateException.class);
  }

  @Test
  void failedOpenReleasesWhatItRetained() {
    driver.failEventCreateAfter = 0;
    assertThatThrownBy(this::open)
        .isInstanceOf(CudaTimerException.class)
        .hasMessageContaining("events");
    assertThat(driver.retained).isEqualTo(1);
    assertThat(driver.released).isEqualTo(1);
  }

  @Test
  void failedInitNamesTheError() {
    driver.initResult = 100;
    assertThatThrownBy(this::open)
        .isInstanceOf(CudaTimerException.class)
        .hasMessageContaining("cuInit")
        .hasMessageContaining("CUDA_ERROR_100");
    assertThat(driver.retained).isZero();
    assertThat(driver.released).isZero();
  }

  @Test
  void missingDeviceIsRefused() {
    assertThatThrownBy(
            () -> CudaStepTimer.open(CudaStepTimer.Config.forDevice(3), driver, clock::get))
        .isInstanceOf(CudaTimerException.class)
        .hasMessageContaining("cuDeviceGet(3)");
    assertThatThrownBy(() -> CudaStepTimer.Config.forDevice(-1))
        .isInstanceOf(IllegalArgumentException.class);
  }
}
