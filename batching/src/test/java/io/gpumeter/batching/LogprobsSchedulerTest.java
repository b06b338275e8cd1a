package io.gpumeter.batching;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.HostStepTimer;
import io.gpumeter.metering.Ticker;
import io.gpumeter.model.LanguageModel;
import io.gpumeter.model.Tokenizer;
import java.time.Clock;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** Logprobs through the scheduler on the real bundled model (DJL, TorchScript, CPU). */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class LogprobsSchedulerTest {
  private final LanguageModel model = TestModels.store().models().get(0).model();
  private final Tokenizer tok = model.tokenizer();
  private ContinuousScheduler scheduler;

  @AfterEach
  void stop() {
    if (scheduler != null) {
      scheduler.close();
    }
  }

  private void start() {
    scheduler =
        new ContinuousScheduler(
            model,
            HostStepTimer.cpu(),
            new DeviceTimeCounters(),
            new RecordingSink(),
            SchedulerConfig.defaults(),
            Ticker.system(),
            Clock.systemUTC(),
            new StepLog());
  }

  private GenerationRequest request(
      String id, double temperature, int n, int top, TokenListener listener) {
    return new GenerationRequest(
        id,
        1,
        1,
        tok.encode("Once upon a time"),
        12,
        temperature,
        42,
        0,
        listener,
        id,
        SamplingOptions.NONE,
        n,
        StopCondition.NONE,
        top);
  }

  @Test
  void greedyTokensAreTheMostLikelyAndTheAlternativesAreSortedProbabilities() throws Exception {
    start();
    List<TokenLogprob> streamed = new CopyOnWriteArrayList<>();
    TokenListener listener =
        new TokenListener() {
          @Override
          public void onToken(int token) {}

          @Override
          public void onChoiceToken(int choice, int token, TokenLogprob logprob) {
            streamed.add(logprob);
          }
        };
    GenerationResult r =
        scheduler.submit(request("lp-1", 0, 1, 5, listener)).result().get(120, TimeUnit.SECONDS);
    Choice c = r.choices().get(0);
    assertThat(c.logprobs()).hasSameSizeAs(c.tokens()).isEqualTo(streamed);
    for (int i = 0; i < c.tokens().length; i++) {
      TokenLogprob lp = c.logprobs().get(i);
      assertThat(lp.token()).isEqualTo(c.tokens()[i]);
      assertThat(lp.topTokens()).hasSize(5);
      // greedy: the chosen token is the most likely one, with the same logprob
      assertThat(lp.topTokens()[0]).isEqualTo(lp.token());
      assertThat(lp.topLogprobs()[0]).isEqualTo(lp.logprob());
      double mass = 0;
      for (int j = 0; j < 5; j++) {
        assertThat(lp.topLogprobs()[j]).isLessThanOrEqualTo(0f);
        if (j > 0) {
          assertThat(lp.topLogprobs()[j]).isLessThanOrEqualTo(lp.topLogprobs()[j - 1]);
        }
        mass += Math.exp(lp.topLogprobs()[j]);
      }
      assertThat(mass).isLessThanOrEqualTo(1.0 + 1e-5);
    }
  }

  @Test
  void everyChoiceCarriesItsOwnLogprobsAndSampledTokensAreScoredByTheModel() throws Exception {
    start();
    GenerationResult r =
        scheduler
            .submit(request("lp-n", 1.0, 3, 0, TokenListener.NONE))
            .result()
            .get(120, TimeUnit.SECONDS);
    assertThat(r.choices()).hasSize(3);
    for (Choice c : r.choices()) {
      assertThat(c.logprobs()).hasSameSizeAs(c.tokens());
      for (int i = 0; i < c.tokens().length; i++) {
        TokenLogprob lp = c.logprobs().get(i);
        assertThat(lp.token()).isEqualTo(c.tokens()[i]);
        assertThat(lp.topTokens()).isEmpty();
        assertThat((double) lp.logprob()).isLessThanOrEqualTo(0).isGreaterThan(-1e4);
      }
    }
    // the first token of every choice is drawn from the same logits: same token, same logprob
    TokenLogprob a = r.choices().get(0).logprobs().get(0);
    for (Choice c : r.choices()) {
      TokenLogprob b = c.logprobs().get(0);
      if (b.token() == a.token()) {
        assertThat(b.logprob()).isCloseTo(a.logprob(), within(1e-6f));
      }
    }
  }

  @Test
  void withoutLogprobsNothingIsKept() throws Exception {
    start();
    GenerationResult r =
        scheduler
            .submit(request("lp-none", 0, 1, -1, TokenListener.NONE))
            .result()
            .get(120, TimeUnit.SECONDS);
    assertThat(r.choices().get(0).logprobs()).isNull();
  }

  @Test
  void aLogprobCountOutsideMinusOneToTwentyIsRefused() {
    assertThatThrownBy(() -> request("bad", 0, 1, 21, TokenListener.NONE))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("topLogprobs");
    assertThatThrownBy(() -> request("bad", 0, 1, -2, TokenListener.NONE))
        .isInstanceOf(IllegalArgumentException.class);
  }
}
