package io.gpumeter.batching;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.HostStepTimer;
import io.gpumeter.metering.StepReport;
import io.gpumeter.metering.Ticker;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.model.LanguageModel;
import io.gpumeter.model.Tokenizer;
import java.time.Clock;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Several prompts in one request, each choice's own stop condition, and the prompt's logprobs (real
 * model, CPU).
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class PromptListsTest {
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
      List<String> prompts,
      int maxTokens,
      double temperature,
      int n,
      StopCondition stop,
      int topLogprobs,
      boolean promptLogprobs) {
    long id = ids.incrementAndGet();
    List<int[]> more = prompts.subList(1, prompts.size()).stream().map(tok::encode).toList();
    return new GenerationRequest(
        "prompts-" + id,
        id,
        id,
        tok.encode(prompts.get(0)),
        maxTokens,
        temperature,
        7,
        0,
        TokenListener.NONE,
        "prompts-" + id,
        NO_EOS,
        n,
        stop,
        topLogprobs,
        more,
        promptLogprobs);
  }

  private GenerationResult run(GenerationRequest r) throws Exception {
    return scheduler.submit(r).result().get(120, TimeUnit.SECONDS);
  }

  @Test
  void eachPromptGetsItsChoicesInOrderAndTheRequestIsOneRecord() throws Exception {
    start(SchedulerConfig.defaults().withTokenBudget(256, 5));
    List<String> prompts = List.of("The quick brown fox", "Once upon a time there was", "Hi");
    int[][] alone = new int[prompts.size()][];
    for (int p = 0; p < prompts.size(); p++) {
      alone[p] =
          run(request(List.of(prompts.get(p)), 12, 0, 1, StopCondition.NONE, -1, false)).tokens();
    }
    int stepsBefore = stepLog.steps.size();
    int recordsBefore = sink.records.size();

    GenerationResult r = run(request(prompts, 12, 0, 2, StopCondition.NONE, -1, false));
    assertThat(r.choices()).hasSize(6);
    for (int i = 0; i < 6; i++) {
      Choice c = r.choices().get(i);
      assertThat(c.index()).isEqualTo(i);
      assertThat(c.tokens())
          .as("choice %d continues prompt %d as a request of that prompt alone does", i, i / 2)
          .containsExactly(alone[i / 2]);
      assertThat(c.finishReason()).isEqualTo(FinishReason.LENGTH);
    }

    List<StepReport> mine = stepLog.steps.subList(stepsBefore, stepLog.steps.size());
    int promptTokens = prompts.stream().mapToInt(p -> tok.encode(p).length).sum();
    assertThat(mine.stream().mapToLong(StepReport::tokens).sum())
        .as("each prompt prefilled once, then 11 decode tokens per choice")
        .isEqualTo(promptTokens + 6 * 11L);
    assertThat(mine.stream().filter(s -> s.tokens() == 0 && s.sequences() == 1).count())
        .as("one prefix copy per prompt")
        .isEqualTo(3);
    assertThat(sink.records).hasSize(recordsBefore + 1);
    UsageRecord u = r.usage();
    assertThat(u.promptTokens()).isEqualTo(promptTokens);
    assertThat(u.completionTokens()).isEqualTo(6 * 12);
    assertThat(u.deviceNs())
        .as("every step of every prompt and choice is on the one record")
        .isEqualTo(mine.stream().mapToLong(StepReport::measuredNs).sum());
    assertThat(u.steps()).isEqualTo(mine.stream().mapToLong(StepReport::sequences).sum());
    assertThat(sink.deviceNs()).isEqualTo(stepLog.measured());
  }

  @Test
  void eachChoiceStopsOnItsOwnCondition() throws Exception {
    start(SchedulerConfig.defaults());
    // choice i stops after i + 1 tokens; a shared counter would stop them all at once
    StopCondition perChoice =
        new StopCondition() {
          @Override
          public boolean stopsAfter(int token) {
            throw new AssertionError("the scheduler asks each choice's own condition");
          }

          @Override
          public StopCondition forChoice(int index) {
            int[] seen = new int[1];
            return token -> ++seen[0] == index + 1;
          }
        };
    GenerationResult r = run(request(List.of("Stop", "Go on"), 20, 1.0, 3, perChoice, -1, false));
    assertThat(r.choices()).hasSize(6);
    for (Choice c : r.choices()) {
      assertThat(c.tokens()).as("choice %d", c.index()).hasSize(c.index() + 1);
      assertThat(c.finishReason()).isEqualTo(FinishReason.STOP);
    }
    assertThat(r.usage().completionTokens()).isEqualTo(1 + 2 + 3 + 4 + 5 + 6);
  }

  @Test
  void thePromptsLogprobsAreTheModelsOwnForEachPrefix() throws Exception {
    start(SchedulerConfig.defaults().withTokenBudget(256, 16));
    String text = "The cat sat on the mat";
    int[] prompt = tok.encode(text);
    GenerationResult r = run(request(List.of(text, "Hello"), 3, 0, 2, StopCondition.NONE, 2, true));
    LogSoftmax ls = new LogSoftmax(model.config().vocabSize());
    for (Choice c : r.choices().subList(0, 2)) {
      List<TokenLogprob> lps = c.promptLogprobs();
      assertThat(lps).hasSize(prompt.length - 1);
      for (int k = 1; k < prompt.length; k++) {
        TokenLogprob lp = lps.get(k - 1);
        assertThat(lp.token()).isEqualTo(prompt[k]);
        TokenLogprob expected = ls.of(model.forwardLast(Arrays.copyOf(prompt, k)), prompt[k], 2);
        assertThat(lp.logprob())
            .as("prompt token %d against a full recomputation of its prefix", k)
            .isCloseTo(expected.logprob(), within(1e-3f));
        assertThat(lp.topTokens()).containsExactly(expected.topTokens());
      }
      assertThat(c.logprobs()).hasSize(3);
    }
    assertThat(r.choices().get(2).promptLogprobs()).hasSize(tok.encode("Hello").length - 1);
    assertThat(r.usage().promptTokens()).isEqualTo(prompt.length + tok.encode("Hello").length);
  }

  @Test
  void morePromptsThanSlotsQueueTheirChoicesAndRunAsSlotsFreeInOneRecord() throws Exception {
    start(SchedulerConfig.defaults().withMaxRunning(3));
    List<String> prompts = List.of("The quick brown fox", "Once upon a time there was", "Hi");
    int[][] alone = new int[prompts.size()][];
    for (int p = 0; p < prompts.size(); p++) {
      alone[p] =
          run(request(List.of(prompts.get(p)), 10, 0, 1, StopCondition.NONE, -1, false)).tokens();
    }
    int stepsBefore = stepLog.steps.size();
    int recordsBefore = sink.records.size();

    // 3 prompts × n = 2 is 6 sequences on 3 slots: one prompt's pair at a time (plus a spare slot)
    GenerationResult r = run(request(prompts, 10, 0, 2, StopCondition.NONE, -1, false));
    assertThat(r.finishReason()).isEqualTo(FinishReason.LENGTH);
    assertThat(r.choices()).hasSize(6);
    for (int i = 0; i < 6; i++) {
      assertThat(r.choices().get(i).tokens())
          .as("choice %d continues prompt %d as that prompt alone does", i, i / 2)
          .containsExactly(alone[i / 2]);
    }
    List<StepReport> mine = stepLog.steps.subList(stepsBefore, stepLog.steps.size());
    assertThat(mine).allMatch(s -> s.sequences() <= 3, "no step runs more than max_running");
    assertThat(mine.stream().filter(s -> s.tokens() == 0 && s.sequences() == 1).count())
        .as("each prompt still prefilled once and copied once")
        .isEqualTo(3);
    assertThat(sink.records).as("one request, one record").hasSize(recordsBefore + 1);
    UsageRecord u = r.usage();
    assertThat(u.completionTokens()).isEqualTo(6 * 10);
    assertThat(u.deviceNs())
        .as("every step of every queued choice is on the one record")
        .isEqualTo(mine.stream().mapToLong(StepReport::measuredNs).sum());
    assertThat(sink.deviceNs()).isEqualTo(stepLog.measured());
    assertThat(scheduler.stats().queued()).isZero();

    // n itself still needs its slots at once
    assertThatThrownBy(
            () ->
                scheduler.submit(
                    request(List.of("a", "b"), 4, 0, 4, StopCondition.NONE, -1, false)))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("n is 4")
        .hasMessageContaining("at most 3");
  }

  @Test
  void cancellingARequestWithQueuedChoicesEndsThemAllAndFreesEverySlot() throws Exception {
    start(SchedulerConfig.defaults().withMaxRunning(2));
    AtomicLong tokens = new AtomicLong();
    long id = ids.incrementAndGet();
    GenerationRequest big =
        new GenerationRequest(
            "prompts-" + id,
            id,
            id,
            tok.encode("a"),
            200,
            0,
            7,
            0,
            t -> tokens.incrementAndGet(),
            "prompts-" + id,
            NO_EOS,
            1,
            StopCondition.NONE,
            -1,
            List.of(tok.encode("b"), tok.encode("c"), tok.encode("d")),
            false);
    Generation g = scheduler.submit(big);
    org.awaitility.Awaitility.await()
        .atMost(java.time.Duration.ofSeconds(60))
        .until(() -> tokens.get() >= 2);
    g.cancel();
    GenerationResult r = g.result().get(120, TimeUnit.SECONDS);
    assertThat(r.finishReason()).isEqualTo(FinishReason.CANCELLED);
    assertThat(r.choices()).hasSize(4);
    assertThat(r.choices().get(3).tokens()).as("never admitted: nothing generated").isEmpty();
    assertThat(sink.records).hasSize(1);
    assertThat(sink.deviceNs()).isEqualTo(stepLog.measured());
    assertThat(scheduler.stats().queued()).isZero();
    // every slot is free again: a request needing both runs
    assertThat(run(request(List.of("x"), 3, 0, 2, StopCondition.NONE, -1, false)).choices())
        .hasSize(2);
  }

  @Test
  void anEmptyPromptIsInvalid() {
    assertThatThrownBy(
            () ->
                new GenerationRequest(
                    "x",
                    1,
                    1,
                    new int[] {1},
                    4,
                    0,
                    1,
                    0,
                    TokenListener.NONE,
                    "x",
                    SamplingOptions.NONE,
                    1,
                    StopCondition.NONE,
                    -1,
                    List.of(new int[0]),
                    false))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("at least one token");
  }
}
