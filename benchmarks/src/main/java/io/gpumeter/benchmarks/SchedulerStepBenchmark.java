package io.gpumeter.benchmarks;

import io.gpumeter.batching.ContinuousScheduler;
import io.gpumeter.batching.Generation;
import io.gpumeter.batching.GenerationRequest;
import io.gpumeter.batching.SchedulerConfig;
import io.gpumeter.batching.TokenListener;
import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.Ticker;
import java.time.Clock;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OperationsPerInvocation;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * The continuous scheduler's own cost per step, with the model and the timer taken out.
 *
 * <p>Set-up: a real {@link ContinuousScheduler} on its own thread, driving a {@link
 * NoopLanguageModel} (returns at once) timed by a {@link ReplayStepTimer} (reads no clock),
 * publishing to a sink that drops records. {@code sequences} greedy generations with a short prompt
 * and a {@code maxTokens} larger than the whole run are submitted once per trial, so after their
 * prompts every step is the same steady decode step of {@code sequences} sequences: build the
 * packed batch, "run" it, split the time with the apportioner, record counters, sample 257 logits
 * per sequence, emit one token each. Nobody joins or leaves while measuring (checked: the run fails
 * if a generation finished or a step had another shape).
 *
 * <p>Measurement: the scheduler thread runs flat out on its own. One benchmark operation is "wait
 * until the scheduler has run {@value #STEPS_PER_OP} more steps" (a {@link StepCounter} listener
 * unparks the benchmark thread at the target step, which is advanced by a fixed stride so the
 * waiter's wake-up latency never accumulates); with {@code @OperationsPerInvocation} JMH reports
 * wall time per scheduler step. With {@code -prof gc}, {@code gc.alloc.rate.norm} is bytes
 * allocated per step by all threads (JMH reads the JVM-wide thread allocation counter), so it
 * includes the scheduler thread; the waiter allocates nothing.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class SchedulerStepBenchmark extends AbstractMicrobenchmark {
  static final int STEPS_PER_OP = 1024;
  private static final int PROMPT_TOKENS = 8;

  /** int slots of generated-token buffers all sequences may hold: 384 MiB of the 1 GiB heap. */
  private static final long TOKEN_BUFFER_INTS = 96L << 20;

  @Param({"1", "8", "32", "128"})
  int sequences;

  private ContinuousScheduler scheduler;
  private StepCounter counter;
  private Generation[] generations;
  private long nextStep;

  @Setup(Level.Trial)
  public void start() {
    stopRetired();
    counter = new StepCounter(sequences);
    SchedulerConfig config =
        SchedulerConfig.defaults().withMaxRunning(sequences).withBatchWindowNanos(0);
    scheduler =
        new ContinuousScheduler(
            new NoopLanguageModel(),
            new ReplayStepTimer(42),
            new DeviceTimeCounters(),
            NoopUsageSink.INSTANCE,
            config,
            Ticker.system(),
            Clock.systemUTC(),
            counter);
    int maxTokens = (int) Math.min(Integer.MAX_VALUE - 64, TOKEN_BUFFER_INTS / sequences);
    int[] prompt = new int[PROMPT_TOKENS];
    for (int i = 0; i < prompt.length; i++) {
      prompt[i] = 'a' + i;
    }
    generations = new Generation[sequences];
    for (int i = 0; i < sequences; i++) {
      generations[i] = scheduler.submit(request(i, prompt, maxTokens));
    }
    counter.awaitSteady(TimeUnit.SECONDS.toNanos(30));
  }

  /** The request of sequence {@code i}: greedy, no sampling option. */
  GenerationRequest request(int i, int[] prompt, int maxTokens) {
    return new GenerationRequest(
        "step-bench-" + i,
        i + 1,
        1,
        prompt,
        maxTokens,
        0.0,
        i,
        TimeUnit.HOURS.toNanos(1),
        TokenListener.NONE);
  }

  @Setup(Level.Iteration)
  public void startIteration() {
    nextStep = scheduler.stats().steps();
  }

  @Benchmark
  @OperationsPerInvocation(STEPS_PER_OP)
  public long step() {
    nextStep += STEPS_PER_OP;
    return counter.awaitStep(nextStep);
  }

  @TearDown(Level.Iteration)
  public void checkSteady() {
    for (Generation g : generations) {
      if (g.result().isDone()) {
        throw new IllegalStateException(
            "generation "
                + g.requestId()
                + " finished during the run: per-step figures would mix"
                + " in admission and finishing; run shorter iterations");
      }
    }
    if (counter.irregularSteps() != 0) {
      throw new IllegalStateException(
          counter.irregularSteps() + " steps were not steady decode steps");
    }
  }

  /**
   * Does not stop the scheduler here: JMH runs trial tear-down inside the last measured iteration,
   * so its allocation would be charged to the steps (stopping copies every generation's tokens,
   * millions of them, into its result). The scheduler thread is a daemon; it is stopped when the
   * next trial in the same JVM starts (with {@code -f 0}) or when the JVM exits.
   */
  @TearDown(Level.Trial)
  public void stop() {
    retire(scheduler);
    generations = null;
  }

  private static ContinuousScheduler retired;
  private static boolean hookAdded;

  private static synchronized void retire(ContinuousScheduler s) {
    retired = s;
  }

  /** Stops the previous trial's scheduler, and makes sure the last one is stopped at exit. */
  private static synchronized void stopRetired() {
    if (!hookAdded) {
      hookAdded = true;
      Runtime.getRuntime()
          .addShutdownHook(
              new Thread(SchedulerStepBenchmark::stopRetired, "stop-retired-scheduler"));
    }
    if (retired != null) {
      retired.shutdown(0, TimeUnit.SECONDS);
      retired = null;
    }
  }
}
