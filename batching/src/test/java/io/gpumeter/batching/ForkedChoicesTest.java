package io.gpumeter.batching;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.HostStepTimer;
import io.gpumeter.metering.StepReport;
import io.gpumeter.metering.Ticker;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import io.gpumeter.model.LanguageModel;
import io.gpumeter.model.Tokenizer;
import java.time.Clock;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** {@code n > 1}: one prefill, a KV prefix copy per other choice, one record (real model, CPU). */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class ForkedChoicesTest {
  /** End-of-sequence banned, so every choice runs to max_tokens and the counts are exact. */
  private static final SamplingOptions NO_EOS =
      new SamplingOptions(1, 0, 0, 0, new int[] {256}, new float[] {-100});

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
      String prompt, int maxTokens, double temperature, long seed, int n, TokenListener l) {
    long id = ids.incrementAndGet();
    return new GenerationRequest(
        "fork-" + id, id, id, tok.encode(prompt), maxTokens, temperature, seed, 0, l, NO_EOS, n);
  }

  private GenerationResult run(GenerationRequest r) throws Exception {
    return scheduler.submit(r).result().get(120, TimeUnit.SECONDS);
  }

  @Test
  void greedyChoicesEqualOneGreedyGenerationAndThePromptIsPrefilledOnce() throws Exception {
    start(SchedulerConfig.defaults().withTokenBudget(256, 5));
    String prompt = "The quick brown fox jumps over";
    int promptLen = tok.encode(prompt).length;
    int[] one = run(request(prompt, 20, 0, 1, 1, TokenListener.NONE)).tokens();
    int stepsBefore = stepLog.steps.size();

    GenerationResult four = run(request(prompt, 20, 0, 1, 4, TokenListener.NONE));
    assertThat(four.choices()).hasSize(4);
    for (int i = 0; i < 4; i++) {
      Choice c = four.choices().get(i);
      assertThat(c.index()).isEqualTo(i);
      assertThat(c.finishReason()).isEqualTo(FinishReason.LENGTH);
      assertThat(c.tokens())
          .as("choice %d continues from the copied prompt", i)
          .containsExactly(one);
    }
    assertThat(four.tokens()).containsExactly(one);

    List<StepReport> mine = stepLog.steps.subList(stepsBefore, stepLog.steps.size());
    long tokens = mine.stream().mapToLong(StepReport::tokens).sum();
    assertThat(tokens)
        .as("the prompt once (in chunks of 5), then 19 decode tokens per choice")
        .isEqualTo(promptLen + 4 * 19L);
    assertThat(mine.stream().filter(s -> s.tokens() == 0 && s.sequences() == 1).count())
        .as("one prefix copy, reported as a step of its own")
        .isEqualTo(1);

    UsageRecord r = four.usage();
    assertThat(sink.records).hasSize(2).contains(r);
    assertThat(r.completionTokens()).isEqualTo(4 * 20);
    assertThat(r.promptTokens()).isEqualTo(promptLen);
    assertThat(r.deviceNs())
        .as("every step of the request, the copy included, is on its one record")
        .isEqualTo(mine.stream().mapToLong(StepReport::measuredNs).sum());
    assertThat(r.steps()).isEqualTo(mine.stream().mapToLong(StepReport::sequences).sum());
    assertConservation();
  }

  @Test
  void sampledChoicesDifferAndTheirSeedReproducesThemUnderBatching() throws Exception {
    start(SchedulerConfig.defaults().withTokenBudget(256, 7));
    String prompt = "Once upon a time there";
    GenerationResult alone = run(request(prompt, 32, 1.0, 5, 3, TokenListener.NONE));
    assertThat(alone.choices().get(0).tokens())
        .as("choice 0 draws as a single choice with the same seed does")
        .containsExactly(run(request(prompt, 32, 1.0, 5, 1, TokenListener.NONE)).tokens());
    assertThat(alone.choices().get(1).tokens()).isNotEqualTo(alone.choices().get(0).tokens());
    assertThat(alone.choices().get(2).tokens()).isNotEqualTo(alone.choices().get(1).tokens());

    List<Generation> others = new ArrayList<>();
    for (int i = 0; i < 3; i++) {
      others.add(
          scheduler.submit(request("Another prompt " + i, 24, 0.9, i, 2, TokenListener.NONE)));
    }
    GenerationResult batched = run(request(prompt, 32, 1.0, 5, 3, TokenListener.NONE));
    for (Generation g : others) {
      g.result().get(120, TimeUnit.SECONDS);
    }
    for (int i = 0; i < 3; i++) {
      assertThat(batched.choices().get(i).tokens())
          .containsExactly(alone.choices().get(i).tokens());
    }
    assertConservation();
  }

  @Test
  void aCancelledRequestOfManyChoicesIsChargedOnceForAllOfThem() throws Exception {
    start(SchedulerConfig.defaults());
    AtomicInteger tokens = new AtomicInteger();
    Generation g =
        scheduler.submit(request("Cancel me", 500, 1.0, 3, 3, t -> tokens.incrementAndGet()));
    await().atMost(Duration.ofSeconds(60)).until(() -> tokens.get() >= 5);
    g.cancel();
    GenerationResult r = g.result().get(60, TimeUnit.SECONDS);
    assertThat(r.finishReason()).isEqualTo(FinishReason.CANCELLED);
    assertThat(r.usage().status()).isEqualTo(UsageStatus.CANCELLED);
    assertThat(r.choices()).hasSize(3).allMatch(c -> c.finishReason() == FinishReason.CANCELLED);
    assertThat(sink.records).containsExactly(r.usage());
    assertThat(r.usage().completionTokens())
        .isEqualTo(r.choices().stream().mapToInt(c -> c.tokens().length).sum());
    assertConservation();
  }

  @Test
  void manyChoicesWaitForTheirSlotsAndMoreThanTheSlotsAreRefused() throws Exception {
    start(SchedulerConfig.defaults().withMaxRunning(3));
    assertThatThrownBy(() -> scheduler.submit(request("x", 4, 0, 1, 4, TokenListener.NONE)))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("n is 4")
        .hasMessageContaining("at most 3");
    AtomicInteger tokens = new AtomicInteger();
    Generation first =
        scheduler.submit(request("Busy", 60, 0, 1, 2, t -> tokens.incrementAndGet()));
    await().atMost(Duration.ofSeconds(60)).until(() -> tokens.get() >= 1);
    Generation three = scheduler.submit(request("Three", 8, 0, 1, 3, TokenListener.NONE));
    GenerationResult r3 = three.result().get(120, TimeUnit.SECONDS);
    GenerationResult r1 = first.result().get(120, TimeUnit.SECONDS);
    assertThat(r3.usage().finishedAt())
        .as("8 tokens finished after 60: it waited for the two slots the first request held")
        .isAfter(r1.usage().finishedAt());
    assertThat(r3.choices()).hasSize(3);
    assertThat(sink.records).hasSize(2);
    assertConservation();
  }

  private void assertConservation() {
    assertThat(stepLog.steps).isNotEmpty();
    for (StepReport step : stepLog.steps) {
      assertThat(StepLog.sharesSum(step)).isEqualTo(step.measuredNs());
    }
    assertThat(sink.deviceNs()).isEqualTo(stepLog.measured());
    assertThat(counters.snapshot().chargedNs()).isEqualTo(stepLog.measured());
    assertThat(sink.records.stream().mapToLong(UsageRecord::steps).sum())
        .as("the records' steps are the reports' rows")
        .isEqualTo(stepLog.steps.stream().mapToLong(StepReport::sequences).sum());
    assertThat(sink.records.stream().map(UsageRecord::requestId).distinct().count())
        .isEqualTo(sink.records.size());
  }
}
