package io.gpumeter.benchmarks;

import io.gpumeter.batching.ContinuousScheduler;
import io.gpumeter.batching.GenerationRequest;
import io.gpumeter.batching.SchedulerConfig;
import io.gpumeter.batching.StepListener;
import io.gpumeter.batching.TokenListener;
import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.Ticker;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageSink;
import java.time.Clock;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Threads;
import org.openjdk.jmh.infra.BenchmarkParams;
import org.openjdk.jmh.infra.IterationParams;
import org.openjdk.jmh.infra.ThreadParams;
import org.openjdk.jmh.runner.IterationType;

/**
 * Handoff latency from {@code submit} to the request's first step, four threads submitting at once
 * into one scheduler.
 *
 * <p>Set-up: a real {@link ContinuousScheduler} (defaults, batch window 0, i.e. no waiting for
 * company when idle) with a {@link NoopLanguageModel} and a {@link ReplayStepTimer}. Each of the 4
 * benchmark threads owns one pre-built request (own API key, 1 prompt token, {@code maxTokens=1},
 * greedy) and loops: submit it, park until its token listener fires, repeat. At most 4 requests are
 * in the scheduler at a time.
 *
 * <p>What is measured, per request:
 *
 * <ul>
 *   <li><b>JMH sample time</b> (the primary score): the whole round trip, from the call to {@code
 *       submit} to the submitting thread running again after its token: submit (validation, the
 *       {@code Seq} and its buffers, the lock-free inbox, unparking the scheduler), the scheduler
 *       waking or finishing its current step, draining, admitting, one no-op step, sampling, the
 *       token callback, and waking the submitter (unpark + context switch).
 *   <li>printed at the end of the fork, over the measured iterations only:
 *       <ul>
 *         <li>{@code submit-call}: the {@code submit} call alone, as the caller sees it;
 *         <li>{@code queue (scheduler)}: the scheduler's own {@code queueNs} from the usage record:
 *             from the ticker read inside {@code submit} to the ticker read just before the first
 *             step starts. This is exactly "submit to first-step admission";
 *         <li>{@code submit-to-token}: from just before {@code submit} to the token callback on the
 *             scheduler thread ({@link System#nanoTime()} on both sides), so it adds the step, the
 *             split and the sampling to the line above, but not the submitter's wake-up.
 *       </ul>
 * </ul>
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Threads(4)
public class HandoffBenchmark extends AbstractMicrobenchmark {
  private static final int LOG_CAPACITY = 1 << 20;

  private ContinuousScheduler scheduler;
  private Client[] clients;
  private final UsageSink sink =
      new UsageSink() {
        private final CompletableFuture<Void> done = CompletableFuture.completedFuture(null);

        @Override
        public CompletableFuture<Void> publish(UsageRecord record) {
          Client c = clients[(int) record.apiKeyId() - 1];
          c.queueLog.record(record.queueNs()); // scheduler thread: the log's single writer
          return done;
        }
      };

  @Setup(Level.Trial)
  public void start(BenchmarkParams params) {
    clients = new Client[params.getThreads()];
    scheduler =
        new ContinuousScheduler(
            new NoopLanguageModel(),
            new ReplayStepTimer(7),
            new DeviceTimeCounters(),
            sink,
            SchedulerConfig.defaults().withBatchWindowNanos(0),
            Ticker.system(),
            Clock.systemUTC(),
            StepListener.NONE);
  }

  @TearDown(Level.Trial)
  public void stop() {
    scheduler.shutdown(1, TimeUnit.SECONDS);
    long[] submitCall = new long[0];
    long[] queue = new long[0];
    long[] toToken = new long[0];
    for (Client c : clients) {
      if (c != null) {
        submitCall = LatencyLog.concat(submitCall, c.submitLog.since(c.submitFrom));
        queue = LatencyLog.concat(queue, c.queueLog.since(c.queueFrom));
        toToken = LatencyLog.concat(toToken, c.tokenLog.since(c.tokenFrom));
      }
    }
    System.out.println();
    System.out.println("handoff, measured iterations, all threads:");
    System.out.println("  submit-call        " + LatencyLog.summary(submitCall));
    System.out.println("  queue (scheduler)  " + LatencyLog.summary(queue));
    System.out.println("  submit-to-token    " + LatencyLog.summary(toToken));
  }

  /** One submitting thread and its request. */
  @State(Scope.Thread)
  public static class Client implements TokenListener {
    GenerationRequest request;
    Thread owner;
    volatile long tokenAt;
    final LatencyLog submitLog = new LatencyLog(LOG_CAPACITY);
    final LatencyLog tokenLog = new LatencyLog(LOG_CAPACITY);
    final LatencyLog queueLog = new LatencyLog(LOG_CAPACITY);
    long submitFrom = -1;
    long tokenFrom = -1;
    long queueFrom = -1;

    @Setup(Level.Trial)
    public void register(HandoffBenchmark bench, ThreadParams thread) {
      int index = thread.getThreadIndex();
      owner = Thread.currentThread();
      request =
          new GenerationRequest(
              "handoff-" + index, index + 1, 1, new int[] {'a'}, 1, 0.0, index, 0, this);
      bench.clients[index] = this;
    }

    @Setup(Level.Iteration)
    public void markMeasured(IterationParams iteration) {
      if (iteration.getType() == IterationType.MEASUREMENT && submitFrom < 0) {
        submitFrom = submitLog.count();
        tokenFrom = tokenLog.count();
        queueFrom = queueLog.count();
      }
    }

    @Override
    public void onToken(int token) {
      tokenAt = System.nanoTime();
      LockSupport.unpark(owner);
    }
  }

  @Benchmark
  public void submitToFirstToken(Client client) {
    client.tokenAt = 0;
    long t0 = System.nanoTime();
    scheduler.submit(client.request);
    long t1 = System.nanoTime();
    long at;
    while ((at = client.tokenAt) == 0) {
      LockSupport.park(this);
    }
    client.submitLog.record(t1 - t0);
    client.tokenLog.record(at - t0);
  }
}
