package io.gpumeter.batching;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.HostStepTimer;
import io.gpumeter.metering.StepReport;
import io.gpumeter.metering.Ticker;
import io.gpumeter.model.LanguageModel;
import io.gpumeter.model.Tokenizer;
import java.time.Clock;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** Sampling options through the scheduler on the real bundled model (DJL, TorchScript, CPU). */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class SamplingSchedulerTest {
  private static final SamplingOptions ALL =
      new SamplingOptions(0.9, 50, 0.4, 0.3, new int[] {' ', 256}, new float[] {-2, -100});

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

  private void start(SchedulerConfig config) {
    scheduler =
        new ContinuousScheduler(
            model,
            HostStepTimer.cpu(),
            counters,
            sink,
            config,
            Ticker.system(),
            Clock.systemUTC(),
            stepLog);
  }

  private GenerationRequest request(
      String prompt, int maxTokens, double temperature, long seed, SamplingOptions o) {
    long id = ids.incrementAndGet();
    return new GenerationRequest(
        "samp-" + id,
        id,
        id,
        tok.encode(prompt),
        maxTokens,
        temperature,
        seed,
        0,
        TokenListener.NONE,
        o);
  }

  private int[] run(GenerationRequest r) throws Exception {
    return scheduler.submit(r).result().get(120, TimeUnit.SECONDS).tokens();
  }

  @Test
  void aSeedGivesTheSameTokensAloneAndBatchedWithOthers() throws Exception {
    start(SchedulerConfig.defaults().withTokenBudget(256, 7));
    String prompt = "Once upon a time";
    int[] alone = run(request(prompt, 48, 1.0, 7, ALL));
    assertThat(alone).hasSize(48); // end-of-sequence is banned

    // The same request again, now sharing every step with others of other seeds and options,
    // some joining mid-way (prefill chunks of 7 tokens mixed into its decode steps).
    List<Generation> others = new ArrayList<>();
    for (int i = 0; i < 3; i++) {
      others.add(scheduler.submit(request("Other text number " + i, 40, 1.3, 100 + i, ALL)));
    }
    Generation again = scheduler.submit(request(prompt, 48, 1.0, 7, ALL));
    for (int i = 3; i < 6; i++) {
      others.add(
          scheduler.submit(
              request(
                  "A longer prompt that arrives later " + i, 30, 0.7, i, SamplingOptions.NONE)));
    }
    int[] batched = again.result().get(120, TimeUnit.SECONDS).tokens();
    for (Generation g : others) {
      g.result().get(120, TimeUnit.SECONDS);
    }
    assertThat(batched).containsExactly(alone);
    assertThat(stepLog.steps.stream().anyMatch(s -> s.sequences() > 4))
        .as("the repeat was batched")
        .isTrue();

    int[] otherSeed = run(request(prompt, 48, 1.0, 8, ALL));
    assertThat(otherSeed).isNotEqualTo(alone);
    assertConservation();
  }

  @Test
  void optionsShapeWhatTheModelGenerates() throws Exception {
    start(SchedulerConfig.defaults());
    String prompt = "The the the the the";
    // temperature 0 is greedy whatever the seed
    SamplingOptions none = SamplingOptions.NONE;
    assertThat(run(request(prompt, 24, 0, 1, none)))
        .containsExactly(run(request(prompt, 24, 0, 2, none)));
    // top_k 1 at a high temperature is greedy too
    SamplingOptions topK1 = new SamplingOptions(1, 1, 0, 0, new int[0], new float[0]);
    assertThat(run(request(prompt, 24, 2, 3, topK1)))
        .containsExactly(run(request(prompt, 24, 0, 3, none)));
    // logit_bias -100 on every token greedy decoding produced: none of them comes back
    int[] greedy = run(request(prompt, 24, 0, 1, none));
    int[] banned = greedy.clone();
    java.util.Arrays.sort(banned);
    banned = java.util.Arrays.stream(banned).distinct().toArray();
    float[] minus = new float[banned.length];
    java.util.Arrays.fill(minus, -100);
    int[] avoided =
        run(request(prompt, 24, 1.5, 5, new SamplingOptions(1, 0, 0, 0, banned, minus)));
    for (int t : avoided) {
      assertThat(banned).doesNotContain(t);
    }
    // +100 on one token: every generated token is it
    int x = 'x';
    int[] forced =
        run(
            request(
                prompt,
                12,
                1.0,
                6,
                new SamplingOptions(1, 0, 0, 0, new int[] {x}, new float[] {100})));
    assertThat(forced).hasSize(12).containsOnly(x);
    // a strong frequency penalty makes greedy decoding repeat less
    SamplingOptions penalty = new SamplingOptions(1, 0, 0, 2, new int[0], new float[0]);
    assertThat(distinct(run(request(prompt, 48, 0, 1, penalty))))
        .isGreaterThan(distinct(run(request(prompt, 48, 0, 1, none))));
    assertConservation();
  }

  @Test
  void aBiasOutsideTheVocabularyIsRefusedAtSubmit() {
    start(SchedulerConfig.defaults());
    SamplingOptions outside =
        new SamplingOptions(1, 0, 0, 0, new int[] {model.config().vocabSize()}, new float[] {1});
    assertThatThrownBy(() -> scheduler.submit(request("x", 1, 0, 1, outside)))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("logit bias token id " + model.config().vocabSize());
    assertThat(sink.records).isEmpty();
  }

  private static long distinct(int[] tokens) {
    return java.util.Arrays.stream(tokens).distinct().count();
  }

  /** Invariant 1: every step charges all of its measurement, and the records add up to it. */
  private void assertConservation() {
    assertThat(stepLog.steps).isNotEmpty();
    for (StepReport step : stepLog.steps) {
      assertThat(StepLog.sharesSum(step)).isEqualTo(step.measuredNs());
    }
    assertThat(sink.deviceNs()).isEqualTo(stepLog.measured());
    assertThat(counters.snapshot().chargedNs()).isEqualTo(stepLog.measured());
  }
}
