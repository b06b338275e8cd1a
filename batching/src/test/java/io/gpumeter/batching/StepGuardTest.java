package io.gpumeter.batching;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assumptions.assumeThat;

import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.Ticker;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import io.gpumeter.model.LanguageModel;
import java.time.Clock;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** Budgets' per-step stop on the real bundled model: the scheduler asks the guard every step. */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class StepGuardTest {
  private static final long STEP_NS = 1_000_000;

  private final LanguageModel model = TestModels.store().models().get(0).model();
  private final RecordingSink sink = new RecordingSink();
  private ContinuousScheduler scheduler;

  @AfterEach
  void stop() {
    if (scheduler != null) {
      scheduler.close();
    }
  }

  private GenerationRequest request(String id, int maxTokens) {
    return new GenerationRequest(
        id,
        1,
        1,
        model.tokenizer().encode("Once upon a time"),
        maxTokens,
        0,
        42,
        0,
        TokenListener.NONE);
  }

  @Test
  void aRequestWhoseGuardRefusesStopsBeforeTheNextStepAndIsChargedForTheStepsItRan()
      throws Exception {
    scheduler =
        new ContinuousScheduler(
            model,
            new FixedStepTimer(STEP_NS), // every step measures 1 ms, all of it this request's
            new DeviceTimeCounters(),
            sink,
            SchedulerConfig.defaults(),
            Ticker.system(),
            Clock.systemUTC(),
            StepListener.NONE);
    GenerationResult free =
        scheduler.submit(request("free", 40)).result().get(60, TimeUnit.SECONDS);
    assumeThat(free.usage().steps())
        .as("the greedy run must take more than 5 steps for this test to mean anything")
        .isGreaterThan(5);

    // funds for 5 ms: the guard allows a step while what was used plus one more step fits
    AtomicInteger asked = new AtomicInteger();
    StepGuard fiveMs =
        (used, next) -> {
          asked.incrementAndGet();
          return used + next <= 5 * STEP_NS;
        };
    GenerationResult r =
        scheduler.submit(request("guarded", 40), fiveMs).result().get(60, TimeUnit.SECONDS);

    assertThat(r.finishReason()).isEqualTo(FinishReason.INSUFFICIENT_QUOTA);
    assertThat(r.finishReason().openAiName()).isEqualTo("insufficient_quota");
    UsageRecord u = r.usage();
    assertThat(u.steps()).isEqualTo(5);
    assertThat(u.deviceNs()).as("charged for exactly the steps it ran").isEqualTo(5 * STEP_NS);
    assertThat(u.status()).as("a delivered answer, like a finished one").isEqualTo(UsageStatus.OK);
    assertThat(r.tokens()).hasSize(5).containsExactly(java.util.Arrays.copyOf(free.tokens(), 5));
    assertThat(asked.get())
        .as("asked before each step after the first, and refused once")
        .isEqualTo(5);
    assertThat(sink.records).extracting(UsageRecord::requestId).containsExactly("free", "guarded");
  }
}
