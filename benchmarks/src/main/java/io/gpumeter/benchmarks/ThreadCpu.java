package io.gpumeter.benchmarks;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.TreeMap;

/**
 * The CPU time of another process's threads, summed by thread group, read from Linux's {@code
 * /proc/PID/task/TID/stat} (user + system clock ticks) and {@code comm} (the thread's name, which
 * the JVM sets from the Java thread's, cut to 15 characters). A group is the name with its digits
 * taken out ({@code multiThreadIoEv-3-1} and {@code -3-2} are one group), so a {@link
 * StreamingThroughput} slice can say which of the server's threads a token's CPU went to: the event
 * loops, the scheduler (which runs the model's step), PyTorch's own worker threads, the rest.
 *
 * <p>A thread that ended between two samples loses its time from the later one; in a slice of a
 * running server the threads that do the work live for the whole run. An empty map off Linux.
 */
final class ThreadCpu {
  private ThreadCpu() {}

  /** Nanoseconds of CPU per thread group of process {@code pid}, now. */
  static Map<String, Long> sample(long pid) {
    Map<String, Long> groups = new TreeMap<>();
    Path tasks = Path.of("/proc", Long.toString(pid), "task");
    if (!Files.isDirectory(tasks)) {
      return groups;
    }
    long nanosPerTick = 10_000_000L; // USER_HZ is 100 on Linux's supported architectures
    try (DirectoryStream<Path> dir = Files.newDirectoryStream(tasks)) {
      for (Path task : dir) {
        try {
          String stat = Files.readString(task.resolve("stat"), StandardCharsets.US_ASCII);
          String comm = Files.readString(task.resolve("comm"), StandardCharsets.UTF_8).trim();
          // the fields after the name's closing parenthesis: state is 3, utime 14, stime 15
          String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
          long ticks = Long.parseLong(f[11]) + Long.parseLong(f[12]);
          groups.merge(group(comm), ticks * nanosPerTick, Long::sum);
        } catch (IOException | RuntimeException e) {
          // the thread ended while it was read
        }
      }
    } catch (IOException e) {
      return groups; // the process ended
    }
    return groups;
  }

  /** The thread's group: its name without digits. */
  static String group(String comm) {
    return comm.replaceAll("[0-9]+", "#");
  }

  /** {@code after - before} per group (groups only in {@code after} count from zero). */
  static Map<String, Long> minus(Map<String, Long> after, Map<String, Long> before) {
    Map<String, Long> d = new TreeMap<>();
    after.forEach((k, v) -> d.put(k, v - before.getOrDefault(k, 0L)));
    return d;
  }
}
