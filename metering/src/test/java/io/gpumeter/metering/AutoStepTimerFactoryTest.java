package io.gpumeter.metering;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.metering.cuda.CudaAvailability;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

class AutoStepTimerFactoryTest {
  private static final CudaAvailability.Probe NO_DRIVER =
      new CudaAvailability.Probe(
          false, 0, "", "JCuda driver library did not load: libcuda.so.1 missing");
  private static final CudaAvailability.Probe ONE_GPU =
      new CudaAvailability.Probe(true, 1, "13.0", "1 CUDA device(s), driver API 13.0");

  @Test
  void onThisMachineCudaDevicesFallBackToTheHostTimerUnlessCudaWorks() {
    StepTimerFactory auto = StepTimerFactory.auto();
    try (StepTimer timer = auto.forDevice("cuda:0")) {
      System.out.println(
          "auto timer for cuda:0 here: " + timer.info() + " (" + CudaAvailability.reason() + ")");
      if (CudaAvailability.isAvailable()) {
        assertThat(timer.info().timerKind()).isEqualTo("cuda-event");
      } else {
        assertThat(timer).isInstanceOf(HostStepTimer.class);
        assertThat(timer.info().timerKind()).isEqualTo("host");
        assertThat(timer.info().device()).isEqualTo("cuda:0");
        StepTimer.Span span = timer.begin();
        assertThat(span.end()).isNotNegative();
      }
    }
  }

  @Test
  void hostOnlyTimesCudaDevicesWithTheHostClock() {
    // the server's timer=host: CUDA devices keep their label, the timer is the host clock
    try (StepTimer timer = StepTimerFactory.hostOnly().forDevice("cuda:1")) {
      assertThat(timer).isInstanceOf(HostStepTimer.class);
      assertThat(timer.info().timerKind()).isEqualTo("host");
      assertThat(timer.info().device()).isEqualTo("cuda:1");
    }
  }

  @Test
  void cpuGetsTheCpuHostTimerWithoutProbingCuda() {
    AutoStepTimerFactory f =
        new AutoStepTimerFactory(
            () -> {
              throw new AssertionError("cpu must not probe CUDA");
            },
            ordinal -> {
              throw new AssertionError("cpu must not open a CUDA timer");
            });
    StepTimer timer = f.forDevice("cpu");
    assertThat(timer).isInstanceOf(HostStepTimer.class);
    assertThat(timer.info().timerKind()).isEqualTo("host");
    assertThat(timer.info().device()).isEqualTo("cpu");
  }

  @Test
  void unavailableCudaGivesAHostTimerLabelledWithTheDevice() {
    AutoStepTimerFactory f =
        new AutoStepTimerFactory(
            () -> NO_DRIVER,
            ordinal -> {
              throw new AssertionError("must not open without CUDA");
            });
    StepTimer timer = f.forDevice("cuda:1");
    assertThat(timer.info()).isEqualTo(new TimerInfo("host", "cuda:1", "cuda:1", "", "", ""));
  }

  @Test
  void availableCudaOpensTheEventTimerForThatOrdinal() {
    List<Integer> opened = new ArrayList<>();
    StepTimer fake =
        new HostStepTimer(
            Ticker.system(), new TimerInfo("cuda-event", "cuda:0", "GPU", "", "", ""));
    AutoStepTimerFactory f =
        new AutoStepTimerFactory(
            () -> ONE_GPU,
            ordinal -> {
              opened.add(ordinal);
              return fake;
            });
    assertThat(f.forDevice("cuda:0")).isSameAs(fake);
    assertThat(f.forDevice("cuda")).isSameAs(fake);
    assertThat(opened).containsExactly(0, 0);
  }

  @Test
  void missingOrdinalOrFailedOpenFallsBackToHost() {
    AutoStepTimerFactory f =
        new AutoStepTimerFactory(
            () -> ONE_GPU,
            ordinal -> {
              throw new IllegalStateException("cuDevicePrimaryCtxRetain failed");
            });
    assertThat(f.forDevice("cuda:3").info().timerKind()).isEqualTo("host"); // only one device
    StepTimer timer = f.forDevice("cuda:0");
    assertThat(timer.info().timerKind()).isEqualTo("host");
    assertThat(timer.info().driverVersion()).isEqualTo("13.0");
  }

  @Test
  void unknownDevicesAreRejected() {
    AutoStepTimerFactory f = new AutoStepTimerFactory(() -> ONE_GPU, ordinal -> null);
    assertThatThrownBy(() -> f.forDevice("tpu:0"))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("tpu:0");
    assertThatThrownBy(() -> f.forDevice("cuda:x")).isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> f.forDevice("cuda:99999999999"))
        .isInstanceOf(IllegalArgumentException.class);
  }
}
