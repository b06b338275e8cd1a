package io.gpumeter.metering.cuda;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.metering.StepTimer;
import io.gpumeter.metering.TimerInfo;
import java.util.Arrays;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The CUDA timer on a real device. Skipped, with the reason printed, where {@link CudaAvailability}
 * finds no usable CUDA driver and device. The workload needs no kernels: {@code cuMemsetD8Async}
 * over a large buffer on the legacy default stream, then a 4-byte copy to the host, as a model step
 * ends with its logits copied to the host.
 */
class CudaStepTimerGpuTest {
  private static final long BYTES = 512L << 20; // 512 MiB: a few hundred microseconds per memset
  private static CudaStepTimer timer;
  private static CUdeviceptr buffer;

  @BeforeAll
  static void openOnDevice() {
    String reason = CudaAvailability.reason();
    System.out.println(
        "CudaStepTimerGpuTest: "
            + (CudaAvailability.isAvailable() ? "running: " : "skipped: ")
            + reason);
    if (!CudaAvailability.isAvailable()) {
      return; // each test is then skipped with this reason (see requireCuda)
    }
    timer = CudaStepTimer.open(0); // makes the primary context current on this thread
    buffer = new CUdeviceptr();
    check(JCudaDriver.cuMemAlloc(buffer, BYTES));
    step(2); // warm up
  }

  @BeforeEach
  void requireCuda() {
    Assumptions.assumeTrue(CudaAvailability.isAvailable(), CudaAvailability::reason);
  }

  @AfterAll
  static void release() {
    if (buffer != null) {
      JCudaDriver.cuMemFree(buffer);
    }
    if (timer != null) {
      timer.close();
    }
  }

  private static void check(int r) {
    assertThat(r).as(CudaFormat.resultName(r)).isZero();
  }

  /** {@code memsets} passes over the buffer, then the "outputs" reach the host. */
  private static void step(int memsets) {
    for (int i = 0; i < memsets; i++) {
      check(JCudaDriver.cuMemsetD8Async(buffer, (byte) i, BYTES, (CUstream) null));
    }
    int[] host = new int[1];
    check(JCudaDriver.cuMemcpyDtoH(Pointer.to(host), buffer, 4)); // waits for the stream
  }

  private static long[] time(int memsets, int reps) {
    long[] ns = new long[reps];
    for (int i = 0; i < reps; i++) {
      StepTimer.Span span = timer.begin();
      try {
        step(memsets);
      } finally {
        ns[i] = span.end();
      }
    }
    return ns;
  }

  private static long median(long[] v) {
    long[] c = v.clone();
    Arrays.sort(c);
    return c[c.length / 2];
  }

  @Test
  void infoNamesTheGpu() {
    TimerInfo info = timer.info();
    System.out.println("CudaStepTimerGpuTest: " + info);
    assertThat(info.timerKind()).isEqualTo("cuda-event");
    assertThat(info.device()).isEqualTo("cuda:0");
    assertThat(info.deviceName()).isNotBlank();
    assertThat(info.deviceUuid())
        .matches("GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}");
    assertThat(info.driverVersion()).matches("\\d+\\.\\d");
  }

  @Test
  void spanMeasuresTheWorkConsistently() {
    long[] host4 = new long[9];
    long[] four = new long[9];
    for (int i = 0; i < four.length; i++) {
      long h = System.nanoTime();
      StepTimer.Span span = timer.begin();
      step(4);
      four[i] = span.end();
      host4[i] = System.nanoTime() - h;
    }
    long[] eight = time(8, 9);
    long m4 = median(four);
    long m8 = median(eight);
    System.out.printf(
        "CudaStepTimerGpuTest: 4 memsets of %d MiB: median %d ns (host %d ns); 8 memsets: %d ns%n",
        BYTES >> 20, m4, median(host4), m8);
    assertThat(m4).isPositive();
    // twice the work, about twice the time
    assertThat((double) m8 / m4).isBetween(1.6, 2.4);
    // the event span lies inside the host span around it
    assertThat(m4).isLessThanOrEqualTo(median(host4) + 20_000L);
    assertThat(m4).isGreaterThan(median(host4) / 2);
    // and repeats agree: the spread of 9 spans is small next to the work
    long[] sorted = four.clone();
    Arrays.sort(sorted);
    assertThat((double) sorted[7] / sorted[1]).isLessThan(1.5);
  }

  @Test
  void spanClosedAfterAThrowingStepStillReturnsTime() {
    long measured = -1;
    StepTimer.Span span = timer.begin();
    try {
      step(2);
      throw new IllegalStateException("step failed after its work was queued");
    } catch (IllegalStateException expected) {
      // the scheduler's catch; the finally below is what matters
    } finally {
      measured = span.end();
    }
    assertThat(measured).isPositive();
    assertThat(timer.stats().fallbackSpans()).isZero();
  }

  @Test
  void tenThousandSpansDoNotLeakEvents() {
    int before = timer.stats().liveEvents();
    for (int i = 0; i < 10_000; i++) {
      StepTimer.Span span = timer.begin();
      assertThat(span.end()).isNotNegative();
    }
    CudaStepTimer.Stats stats = timer.stats();
    System.out.println("CudaStepTimerGpuTest: after 10000 empty spans " + stats);
    assertThat(stats.liveEvents()).isEqualTo(before).isLessThanOrEqualTo(4);
    assertThat(stats.fallbackSpans()).isZero();
  }
}
