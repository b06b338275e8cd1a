package io.gpumeter.benchmarks;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.Test;

class ThreadCpuTest {
  @Test
  void aThreadsCpuTimeIsCountedInItsGroupWithoutItsDigits() throws Exception {
    assumeTrue(Files.isDirectory(Path.of("/proc/self/task")), "needs Linux's /proc");
    long pid = ProcessHandle.current().pid();
    Map<String, Long> before = ThreadCpu.sample(pid);
    ThreadMXBean mx = ManagementFactory.getThreadMXBean();
    AtomicBoolean stop = new AtomicBoolean();
    long[] burnt = {0};
    Thread burner =
        new Thread(
            () -> {
              long start = mx.getCurrentThreadCpuTime();
              long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
              long x = 0;
              while (!stop.get() && System.nanoTime() < deadline) {
                x += Long.numberOfTrailingZeros(x + System.nanoTime());
              }
              burnt[0] = mx.getCurrentThreadCpuTime() - start + (x & 0);
            },
            "cpu-burner-42");
    burner.start();
    // sampled while the thread lives (a thread that ended is gone from /proc), until /proc shows
    // at least 200 ms of its CPU
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
    Map<String, Long> during = ThreadCpu.sample(pid);
    while (System.nanoTime() < deadline && during.getOrDefault("cpu-burner-#", 0L) < 200_000_000L) {
      during = ThreadCpu.sample(pid);
    }
    stop.set(true);
    burner.join(TimeUnit.SECONDS.toMillis(60));

    assertThat(ThreadCpu.group("multiThreadIoEv-3-12")).isEqualTo("multiThreadIoEv-#-#");
    Map<String, Long> delta = ThreadCpu.minus(during, before);
    assertThat(delta).containsKey("cpu-burner-#");
    // /proc counts in 10 ms ticks; no more than the thread burnt in all
    assertThat(delta.get("cpu-burner-#")).isBetween(200_000_000L, burnt[0] + 20_000_000L);
  }
}
