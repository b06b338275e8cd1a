package io.gpumeter.batching;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.HostStepTimer;
import io.gpumeter.metering.StepReport;
import io.gpumeter.metering.StepTimer;
import io.gpumeter.metering.Ticker;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import io.gpumeter.metering.WeightPolicy;
import io.gpumeter.model.KvCache;
import io.gpumeter.model.LanguageModel;
import io.gpumeter.model.ModelConfig;
import io.gpumeter.model.ModelException;
import io.gpumeter.model.StepBatch;
import io.gpumeter.model.Tokenizer;
import java.math.BigInteger;
import java.time.Clock;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The scheduler on the real bundled model (DJL, TorchScript, CPU). */
@Timeout(value = 5, unit = TimeUnit.MINUTES) // per test: a hung scheduler fails, never stalls CI
class ContinuousSchedulerTest {
  private static final Duration WAIT = Duration.ofSeconds(60);

  private final LanguageModel model = TestModels.store().models().get(0).model();
  private final Tokenizer tok = model.tokenizer();
  private final RecordingSink sink = new RecordingSink();
  private final StepLog stepLog = new StepLog();
  private final DeviceTimeCounters counters = new DeviceTimeCounters();
  private final AtomicLong ids = new AtomicLong();
  private ContinuousScheduler scheduler;

  @AfterEach
  void stop() {
    if (scheduler != null) {
      scheduler.close();
    }
  }

  private ContinuousScheduler start(LanguageModel m, StepTimer timer, SchedulerConfig config) {
    scheduler =
        new ContinuousScheduler(
            m, timer, counters, sink, config, Ticker.system(), Clock.systemUTC(), stepLog);
    return scheduler;
  }

  private GenerationRequest request(
      long key,
      String prompt,
      int maxTokens,
      double temperature,
      long timeoutNanos,
      TokenListener listener) {
    return new GenerationRequest(
        "req-" + ids.incrementAndGet(),
        key,
        key,
        tok.encode(prompt),
        maxTokens,
        temperature,
        42,
        timeoutNanos,
        listener);
  }

  private GenerationRequest request(long key, String prompt, int maxTokens) {
    return request(key, prompt, maxTokens, 0, 0, TokenListener.NONE);
  }

  /**
   * Invariant 1, checkable after the scheduler went quiet: every step report charges all of its
   * measurement, and the counters and the usage records add up to exactly the reports.
   */
  private void assertConservation() {
    assertThat(stepLog.steps).isNotEmpty();
    for (StepReport step : stepLog.steps) {
      assertThat(step.kind()).isEqualTo(StepReport.Kind.CHARGED);
      assertThat(StepLog.sharesSum(step))
          .as("shares of a step sum to its measurement")
          .isEqualTo(step.measuredNs())
          .isEqualTo(step.chargedNs());
      assertThat(step.systemNs()).isZero();
    }
    DeviceTimeCounters.Snapshot snap = counters.snapshot();
    assertThat(sink.deviceNs()).isEqualTo(stepLog.measured());
    assertThat(snap.chargedNs()).isEqualTo(stepLog.measured());
    assertThat(snap.measuredNs()).isEqualTo(stepLog.measured());
    assertThat(snap.systemNs()).as("the scheduler never records system time").isZero();
    assertThat(snap.steps()).isEqualTo(stepLog.steps.size());
    assertThat(snap.stepTokens())
        .isEqualTo(stepLog.steps.stream().mapToLong(StepReport::tokens).sum());
    // each row of a step is one step of one request's record
    long rows = stepLog.steps.stream().mapToLong(StepReport::sequences).sum();
    assertThat(snap.stepSequences()).isEqualTo(rows);
    assertThat(sink.records.stream().mapToLong(UsageRecord::steps).sum())
        .as("the records' steps are the reports' rows")
        .isEqualTo(rows);
    assertThat(sink.records.stream().map(UsageRecord::requestId).distinct().count())
        .as("one record per request")
        .isEqualTo(sink.records.size());
  }

  @Test
  void aRequestSubmittedDuringALongGenerationStartsBeforeItEnds() throws Exception {
    start(model, HostStepTimer.cpu(), SchedulerConfig.defaults());
    AtomicInteger longTokens = new AtomicInteger();
    Generation longGen =
        scheduler.submit(
            request(1, "The history of the", 400, 0, 0, t -> longTokens.incrementAndGet()));
    await().atMost(WAIT).until(() -> longTokens.get() >= 20);
    List<Integer> longTokensAtShortFirstToken = new CopyOnWriteArrayList<>();
    Generation shortGen =
        scheduler.submit(
            request(
                2, "Python is", 8, 0, 0, t -> longTokensAtShortFirstToken.add(longTokens.get())));
    GenerationResult shortResult = shortGen.result().get(60, TimeUnit.SECONDS);
    assertThat(longGen.result()).isNotDone();
    assertThat(longTokensAtShortFirstToken.get(0)).isLessThan(400);
    GenerationResult longResult = longGen.result().get(120, TimeUnit.SECONDS);
    assertThat(shortResult.usage().finishedAt()).isBefore(longResult.usage().finishedAt());
    assertThat(stepLog.steps.stream().anyMatch(s -> s.sequences() > 1)).isTrue();
    assertConservation();
  }

  @Test
  void kvMemoryTimeIsTheSumOverItsStepsOfCachedBytesTimesMeasuredNanoseconds() throws Exception {
    // Small chunks so the prompt takes several steps of growing context before it decodes.
    SchedulerConfig config =
        new SchedulerConfig(4, 64, 5, 16, 0L, 300_000_000_000L, WeightPolicy.tokens());
    start(model, HostStepTimer.cpu(), config);
    GenerationResult r =
        scheduler.submit(request(1, "The history of the", 12)).result().get(60, TimeUnit.SECONDS);
    ModelConfig c = model.config();
    long bytesPerToken = (long) c.layers() * c.kvHeads() * c.headDim() * 2 * 4; // float32
    assertThat(bytesPerToken).isEqualTo(4096);
    // Independently: the only sequence processed step.tokens() tokens in each step, so its cache
    // after step k holds the tokens of steps 1..k.
    BigInteger expected = BigInteger.ZERO;
    long cached = 0;
    long peak = 0;
    for (StepReport step : stepLog.steps) {
      assertThat(step.sequences()).isEqualTo(1);
      cached += step.tokens();
      peak = Math.max(peak, cached * bytesPerToken);
      expected =
          expected.add(
              BigInteger.valueOf(cached * bytesPerToken)
                  .multiply(BigInteger.valueOf(step.measuredNs())));
    }
    assertThat(stepLog.steps.size()).isGreaterThan(4); // 4 prompt chunks at least, then decodes
    assertThat(BigInteger.valueOf(r.usage().kvByteNs())).isEqualTo(expected);
    assertThat(r.usage().peakKvBytes()).isEqualTo(peak);
    assertThat(r.usage().kvByteNs()).isPositive();
  }

  @Test
  void greedyWithTheKvCacheMatchesFullRecomputation() throws Exception {
    start(model, HostStepTimer.cpu(), SchedulerConfig.defaults().withTokenBudget(256, 7));
    String prompt = "The quick brown fox jumps over the lazy dog. Then it";
    // Run two others alongside so the packed, mixed steps are exercised too.
    Generation other1 = scheduler.submit(request(2, "In the beginning", 40));
    Generation g = scheduler.submit(request(1, prompt, 40));
    Generation other2 = scheduler.submit(request(3, "Errors should never", 40));
    int[] cached = g.result().get(60, TimeUnit.SECONDS).tokens();
    other1.result().get(60, TimeUnit.SECONDS);
    other2.result().get(60, TimeUnit.SECONDS);

    List<Integer> recomputed = new ArrayList<>();
    int[] seq = tok.encode(prompt);
    for (int i = 0; i < 40; i++) {
      float[] logits = model.forwardLast(seq);
      int best = 0;
      for (int v = 1; v < logits.length; v++) {
        if (logits[v] > logits[best]) {
          best = v;
        }
      }
      if (best == model.config().eosId()) {
        break;
      }
      recomputed.add(best);
      seq = java.util.Arrays.copyOf(seq, seq.length + 1);
      seq[seq.length - 1] = best;
    }
    assertThat(cached).containsExactly(recomputed.stream().mapToInt(Integer::intValue).toArray());
  }

  @Test
  void cancelledAndTimedOutRequestsKeepTheTimeOfEveryStepTheyWereIn() throws Exception {
    start(model, new FixedStepTimer(1_000_003), SchedulerConfig.defaults());
    AtomicInteger cancelTokens = new AtomicInteger();
    Generation toCancel =
        scheduler.submit(
            request(
                1, "Cancel me after a while", 500, 0.8, 0, t -> cancelTokens.incrementAndGet()));
    Generation toTimeOut =
        scheduler.submit(
            request(
                2,
                "I will run out of time",
                1000,
                0.8,
                TimeUnit.MILLISECONDS.toNanos(150),
                TokenListener.NONE));
    List<Generation> finishing = new ArrayList<>();
    for (int i = 0; i < 6; i++) {
      finishing.add(
          scheduler.submit(request(3 + i % 2, "Finish " + i, 12, 0.7, 0, TokenListener.NONE)));
    }
    await().atMost(WAIT).until(() -> cancelTokens.get() >= 10);
    toCancel.cancel();
    GenerationResult cancelled = toCancel.result().get(30, TimeUnit.SECONDS);
    GenerationResult timedOut = toTimeOut.result().get(30, TimeUnit.SECONDS);
    for (Generation g : finishing) {
      assertThat(g.result().get(30, TimeUnit.SECONDS).usage().status()).isEqualTo(UsageStatus.OK);
    }

    assertThat(cancelled.finishReason()).isEqualTo(FinishReason.CANCELLED);
    assertThat(cancelled.usage().status()).isEqualTo(UsageStatus.CANCELLED);
    assertThat(cancelled.usage().steps()).isGreaterThanOrEqualTo(10);
    assertThat(cancelled.usage().deviceNs()).isPositive();
    assertThat(cancelled.usage().decodeNs()).isPositive();
    assertThat(timedOut.usage().status()).isEqualTo(UsageStatus.TIMEOUT);
    assertThat(timedOut.usage().deviceNs()).isPositive();
    assertThat(sink.records).hasSize(8);
    assertConservation();
    // With a fixed 1,000,003 ns step, total charged is exactly steps x 1,000,003.
    assertThat(sink.deviceNs()).isEqualTo(stepLog.steps.size() * 1_000_003L);
  }

  @Test
  void aFloodFromOneKeyDoesNotStarveAnother() throws Exception {
    start(model, HostStepTimer.cpu(), SchedulerConfig.defaults().withMaxRunning(2));
    List<String> completionOrder = new CopyOnWriteArrayList<>();
    List<Generation> flood = new ArrayList<>();
    for (int i = 0; i < 40; i++) {
      Generation g = scheduler.submit(request(1, "Flood " + i, 6));
      g.result().thenAccept(r -> completionOrder.add("A"));
      flood.add(g);
    }
    List<Generation> trickle = new ArrayList<>();
    for (int i = 0; i < 3; i++) {
      Generation g = scheduler.submit(request(2, "Trickle " + i, 6));
      g.result().thenAccept(r -> completionOrder.add("B"));
      trickle.add(g);
    }
    for (Generation g : trickle) {
      g.result().get(60, TimeUnit.SECONDS);
    }
    int lastB = completionOrder.lastIndexOf("B");
    // Keys alternate at every admission, so B's three requests finish within the first few
    // turns rather than after the 40 that A queued before them.
    assertThat(lastB).isLessThan(12);
    for (Generation g : flood) {
      g.result().get(60, TimeUnit.SECONDS);
    }
    assertConservation();
  }

  @Test
  void aFailingStepIsChargedToItsSequencesAndTheSchedulerKeepsServing() throws Exception {
    AtomicInteger stepsSeen = new AtomicInteger();
    LanguageModel failing = new FailOnceModel(model, 3, stepsSeen);
    start(failing, new FixedStepTimer(777), SchedulerConfig.defaults());
    Generation a = scheduler.submit(request(1, "First", 20));
    Generation b = scheduler.submit(request(2, "Second", 20));
    GenerationResult ra = a.result().get(30, TimeUnit.SECONDS);
    GenerationResult rb = b.result().get(30, TimeUnit.SECONDS);
    assertThat(ra.finishReason()).isEqualTo(FinishReason.ERROR);
    assertThat(ra.usage().status()).isEqualTo(UsageStatus.FAILED);
    assertThat(ra.error()).hasMessageContaining("injected");
    assertThat(ra.usage().deviceNs() + rb.usage().deviceNs()).isEqualTo(3 * 777L);
    assertThat(stepLog.steps.get(2).failed()).isTrue();

    GenerationResult after =
        scheduler.submit(request(1, "Still serving", 5)).result().get(30, TimeUnit.SECONDS);
    assertThat(after.usage().status()).isEqualTo(UsageStatus.OK);
    assertConservation();
  }

  @Test
  void admissionIsBoundedAndChecksTheContext() throws Exception {
    start(
        model,
        HostStepTimer.cpu(),
        SchedulerConfig.defaults().withMaxRunning(1).withQueueCapacity(2));
    int ctx = model.config().contextLength();
    assertThatThrownBy(() -> scheduler.submit(request(1, "x".repeat(ctx), 1)))
        .isInstanceOfSatisfying(
            AdmissionRejectedException.class,
            e -> assertThat(e.reason()).isEqualTo(AdmissionRejectedException.Reason.TOO_LONG));
    List<Generation> accepted = new ArrayList<>();
    AdmissionRejectedException full = null;
    for (int i = 0; i < 50 && full == null; i++) {
      try {
        accepted.add(scheduler.submit(request(1, "Fill the queue", 50)));
      } catch (AdmissionRejectedException e) {
        full = e;
      }
    }
    assertThat(full).isNotNull();
    assertThat(full.reason()).isEqualTo(AdmissionRejectedException.Reason.QUEUE_FULL);
    for (Generation g : accepted) {
      g.cancel();
    }
    for (Generation g : accepted) {
      assertThat(g.result().get(30, TimeUnit.SECONDS).finishReason())
          .isEqualTo(FinishReason.CANCELLED);
    }
    assertThat(scheduler.stats().rejected()).isGreaterThanOrEqualTo(2);
    assertThat(sink.records).hasSize(accepted.size());
  }

  @Test
  void oneKeyFloodingCannotFillTheQueueForAnother() throws Exception {
    // One running slot, 8 waiting at most, of which one key may hold 2.
    start(
        model,
        HostStepTimer.cpu(),
        SchedulerConfig.defaults().withMaxRunning(1).withQueueCapacity(8).withMaxQueuedPerKey(2));
    List<Generation> flood = new ArrayList<>();
    int refused = 0;
    for (int i = 0; i < 40; i++) {
      try {
        flood.add(scheduler.submit(request(1, "Flood " + i, 200)));
      } catch (AdmissionRejectedException e) {
        assertThat(e.reason()).isEqualTo(AdmissionRejectedException.Reason.QUEUE_FULL);
        assertThat(e.getMessage()).contains("share of the queue");
        refused++;
      }
    }
    // at most 2 waiting plus those the scheduler admitted meanwhile (1 slot): far fewer than 40
    assertThat(refused).isGreaterThanOrEqualTo(40 - 2 - 2);
    assertThat(scheduler.stats().queued()).isLessThanOrEqualTo(2);
    // Another key is still admitted, up to its own share, while the flood waits.
    Generation other1 = scheduler.submit(request(2, "Other key", 2));
    Generation other2 = scheduler.submit(request(2, "Other key", 2));
    for (Generation g : flood) {
      g.cancel();
    }
    assertThat(other1.result().get(60, TimeUnit.SECONDS).usage().status())
        .isEqualTo(UsageStatus.OK);
    assertThat(other2.result().get(60, TimeUnit.SECONDS).usage().status())
        .isEqualTo(UsageStatus.OK);
    for (Generation g : flood) {
      g.result().get(60, TimeUnit.SECONDS);
    }
    // The shares were given back: the flooding key is admitted again.
    assertThat(scheduler.submit(request(1, "Again", 1)).result().get(60, TimeUnit.SECONDS))
        .extracting(r -> r.usage().status())
        .isEqualTo(UsageStatus.OK);
  }

  @Test
  void shutdownGivesEveryAcceptedRequestItsRecord() throws Exception {
    start(model, HostStepTimer.cpu(), SchedulerConfig.defaults().withMaxRunning(2));
    List<Generation> gens = new ArrayList<>();
    for (int i = 0; i < 6; i++) {
      gens.add(scheduler.submit(request(1, "Shutdown " + i, 300)));
    }
    // shut down with two running mid-generation and four still waiting
    await().atMost(WAIT).until(() -> scheduler.stats().steps() >= 3);
    scheduler.shutdown(0, TimeUnit.SECONDS);
    for (Generation g : gens) {
      assertThat(g.result()).isDone();
    }
    assertThat(sink.records).hasSize(6);
    assertThatThrownBy(() -> scheduler.submit(request(1, "late", 1)))
        .isInstanceOfSatisfying(
            AdmissionRejectedException.class,
            e -> assertThat(e.reason()).isEqualTo(AdmissionRejectedException.Reason.SHUTTING_DOWN));
    assertConservation();
  }

  /** The real model, made to throw on its n-th step (a CUDA error cannot be caused on a CPU). */
  private static final class FailOnceModel implements LanguageModel {
    private final LanguageModel delegate;
    private final int failAt;
    private final AtomicInteger seen;

    FailOnceModel(LanguageModel delegate, int failAt, AtomicInteger seen) {
      this.delegate = delegate;
      this.failAt = failAt;
      this.seen = seen;
    }

    @Override
    public ModelConfig config() {
      return delegate.config();
    }

    @Override
    public Tokenizer tokenizer() {
      return delegate.tokenizer();
    }

    @Override
    public String device() {
      return delegate.device();
    }

    @Override
    public KvCache newCache(int slots) {
      return delegate.newCache(slots);
    }

    @Override
    public void step(StepBatch batch, KvCache cache, float[][] logits) {
      if (seen.incrementAndGet() == failAt) {
        throw new ModelException("injected step failure");
      }
      delegate.step(batch, cache, logits);
    }

    @Override
    public void copyPrefix(KvCache cache, int fromSlot, int toSlot, int positions) {
      delegate.copyPrefix(cache, fromSlot, toSlot, positions);
    }

    @Override
    public float[] forwardLast(int[] tokens) {
      return delegate.forwardLast(tokens);
    }

    @Override
    public void close() {}
  }

  @Test
  void aStopConditionEndsTheSequenceAtTheTokenThatMetIt() throws Exception {
    start(model, HostStepTimer.cpu(), SchedulerConfig.defaults());
    List<Integer> seen = new CopyOnWriteArrayList<>();
    AtomicInteger asked = new AtomicInteger();
    GenerationRequest r =
        new GenerationRequest(
            "req-stop",
            1,
            1,
            tok.encode("The history of the"),
            200,
            0,
            42,
            0,
            seen::add,
            token -> asked.incrementAndGet() == 5);
    GenerationResult result = scheduler.submit(r).result().get(60, TimeUnit.SECONDS);
    assertThat(result.finishReason()).isEqualTo(FinishReason.STOP);
    assertThat(result.tokens()).hasSize(5);
    assertThat(seen).hasSize(5);
    assertThat(asked).hasValue(5);
    // no step ran past the stop: as many steps as a run limited to 5 tokens
    GenerationResult limited =
        scheduler.submit(request(1, "The history of the", 5)).result().get(60, TimeUnit.SECONDS);
    assertThat(limited.finishReason()).isEqualTo(FinishReason.LENGTH);
    assertThat(result.usage().steps()).isEqualTo(limited.usage().steps());
    assertThat(result.tokens()).isEqualTo(limited.tokens());
    assertConservation();
  }
}
