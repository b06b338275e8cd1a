package io.gpumeter.benchmarks;

import io.gpumeter.metering.StepTimer;
import io.gpumeter.metering.TimerInfo;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;

/**
 * A step timer for benchmarks on a shared CPU: the calling thread's CPU time instead of the wall
 * clock, so the time other processes hold the cores is not counted. Meaningful only when the model
 * computes on the calling thread (PyTorch with one intra-op thread: {@code
 * -Dai.djl.pytorch.num_threads=1 -Dai.djl.pytorch.num_interop_threads=1}, {@code
 * OMP_NUM_THREADS=1}); never used to bill.
 */
final class ThreadCpuStepTimer implements StepTimer {
  private final ThreadMXBean threads = ManagementFactory.getThreadMXBean();

  ThreadCpuStepTimer() {
    if (!threads.isCurrentThreadCpuTimeSupported()) {
      throw new IllegalStateException("this JVM cannot read a thread's CPU time");
    }
    threads.setThreadCpuTimeEnabled(true);
  }

  @Override
  public Span begin() {
    long start = threads.getCurrentThreadCpuTime();
    return () -> threads.getCurrentThreadCpuTime() - start;
  }

  @Override
  public TimerInfo info() {
    return new TimerInfo("thread-cpu", "cpu", "thread CPU time", "", "", "");
  }
}
