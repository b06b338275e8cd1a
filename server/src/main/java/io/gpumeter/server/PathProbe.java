package io.gpumeter.server;

import io.gpumeter.batching.GenerationResult;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.Map;

/**
 * A debug probe on the path of one whole (non-streamed) completion: where its milliseconds go
 * besides the model step (issue 9 item 2). Off unless the JVM runs with {@code
 * -Dgpumeter.probe.path=true}; when off, {@link #begin} returns null and every stamp is a null
 * check. Not a setting of the server: a measuring aid read by {@code tools.DurabilityLatency}.
 *
 * <p>Stamps ({@link System#nanoTime}) along one request, and the phases between them:
 *
 * <ol>
 *   <li>{@link Phase#PARSE}: from the exchange's start (the aggregated request reached the API
 *       handler) to {@code generate}: routing, cached authentication, body parse, tokenize;
 *   <li>{@link Phase#ADMIT}: admission and the budget reservation, up to the {@code submit} call;
 *   <li>{@link Phase#QUEUE}: the usage record's {@code queue_ns}, submission to the first step's
 *       start (the scheduler thread's wake-up and admission);
 *   <li>{@link Phase#DEVICE}: the timed model steps ({@code device_time_ns});
 *   <li>{@link Phase#STEP_HOST}: the rest until the result completes on the scheduler thread: host
 *       work around the timed steps (sampling, stop checks), building and publishing the record,
 *       and the {@code submit} call's own work on the loop before the scheduler reads its clock;
 *   <li>{@link Phase#HOP}: from the result's completion to the answer's continuation running on the
 *       event loop (the loop's wake-up);
 *   <li>{@link Phase#ANSWER}: decode the text, the receipt, JSON encode and write and flush;
 *   <li>{@link Phase#SERVER}: the whole server-side window, start to written.
 * </ol>
 *
 * <p>Thread safety: a {@link Trace}'s stamps are written by one thread at a time in happens-before
 * order (loop, scheduler through the future, loop through its task queue); {@link #record} is
 * synchronized. At most {@link #CAPACITY} requests are kept; later ones are dropped.
 */
public final class PathProbe {
  /** True when the JVM was started with {@code -Dgpumeter.probe.path=true}. */
  public static final boolean ENABLED = Boolean.getBoolean("gpumeter.probe.path");

  static final int CAPACITY = 200_000;

  /** The phases of one request, in order. */
  public enum Phase {
    PARSE,
    ADMIT,
    QUEUE,
    DEVICE,
    STEP_HOST,
    HOP,
    ANSWER,
    SERVER
  }

  private static final Map<Phase, long[]> SAMPLES = new EnumMap<>(Phase.class);
  private static int count;

  private PathProbe() {}

  /** The stamps of one request; null when the probe is off. */
  static Trace begin(long startNanos) {
    return ENABLED ? new Trace(startNanos) : null;
  }

  /** Stamps of one request. */
  static final class Trace {
    final long start;
    long generate;
    long submitted;
    long completed;
    long onLoop;

    private Trace(long start) {
      this.start = start;
      this.generate = System.nanoTime();
    }
  }

  static void submitted(Trace t) {
    if (t != null) {
      t.submitted = System.nanoTime();
    }
  }

  static void completed(Trace t) {
    if (t != null) {
      t.completed = System.nanoTime();
    }
  }

  static void onLoop(Trace t) {
    if (t != null) {
      t.onLoop = System.nanoTime();
    }
  }

  /** The answer was written (flushed to the socket from the loop): records the request's phases. */
  static void written(Trace t, GenerationResult result) {
    if (t == null) {
      return;
    }
    long written = System.nanoTime();
    long queue = result.usage().queueNs();
    long device = result.usage().deviceNs();
    record(
        t.generate - t.start,
        t.submitted - t.generate,
        queue,
        device,
        t.completed - t.submitted - queue - device,
        t.onLoop - t.completed,
        written - t.onLoop,
        written - t.start);
  }

  private static synchronized void record(long... phases) {
    if (count >= CAPACITY) {
      return;
    }
    for (Phase p : Phase.values()) {
      SAMPLES.computeIfAbsent(p, k -> new long[CAPACITY])[count] = phases[p.ordinal()];
    }
    count++;
  }

  /** Forgets every recorded request (between a warm-up and a measured run). */
  public static synchronized void reset() {
    count = 0;
  }

  /** Requests recorded since the last {@link #reset}. */
  public static synchronized int count() {
    return count;
  }

  /**
   * The {@code q}-quantile ({@code 0 < q < 1}) of one phase over the recorded requests, in
   * nanoseconds; 0 when none was recorded.
   */
  public static synchronized long quantile(Phase phase, double q) {
    if (count == 0) {
      return 0;
    }
    long[] sorted = Arrays.copyOf(SAMPLES.get(phase), count);
    Arrays.sort(sorted);
    return sorted[Math.min(count - 1, (int) (q * count))];
  }

  /** The mean of one phase over the recorded requests, in nanoseconds; 0 when none. */
  public static synchronized long mean(Phase phase) {
    if (count == 0) {
      return 0;
    }
    long[] s = SAMPLES.get(phase);
    long sum = 0;
    for (int i = 0; i < count; i++) {
      sum += s[i];
    }
    return sum / count;
  }
}
