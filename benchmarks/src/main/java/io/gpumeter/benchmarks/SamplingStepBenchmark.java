package io.gpumeter.benchmarks;

import io.gpumeter.batching.GenerationRequest;
import io.gpumeter.batching.SamplingOptions;
import io.gpumeter.batching.StopCondition;
import io.gpumeter.batching.TokenListener;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Param;

/**
 * {@link SchedulerStepBenchmark} with the sampling options on or off, to show what sampling adds to
 * the scheduler's step (issue 12: "show the scheduler step cost at 32 sequences with all options
 * on"). Run with {@code -p sequences=32}.
 *
 * <ul>
 *   <li>{@code greedy}: temperature 0, no option (the scheduler benchmark's own requests);
 *   <li>{@code temperature}: temperature 0.8 and only end-of-sequence banned (so no generation
 *       ends): a softmax over the 257 logits and one draw per sequence;
 *   <li>{@code all}: temperature 0.8, {@code top_p} 0.9, {@code top_k} 40, both penalties, and a
 *       {@code logit_bias} of four tokens (end-of-sequence banned among them);
 *   <li>{@code logprobs}: {@code temperature} plus logprobs with 5 alternatives per token (a copy
 *       of the row, a log-sum-exp and a top-5 pass per sequence): compare with {@code temperature}.
 * </ul>
 *
 * The {@link NoopLanguageModel} writes no logits, so each row holds what the sampler left in it at
 * the previous step (probabilities, then penalised): the work per step is the same as with real
 * logits (every pass is over the whole row; top-k/top-p pop from a heap of all candidates), only
 * the distribution differs.
 */
public class SamplingStepBenchmark extends SchedulerStepBenchmark {
  @Param({"greedy", "temperature", "all", "logprobs"})
  String sampling;

  @Override
  GenerationRequest request(int i, int[] prompt, int maxTokens) {
    if (sampling.equals("greedy")) {
      return super.request(i, prompt, maxTokens);
    }
    SamplingOptions o =
        sampling.equals("all")
            ? new SamplingOptions(
                0.9,
                40,
                0.5,
                0.5,
                new int[] {NoopLanguageModel.EOS, 10, 32, 101},
                new float[] {-100, -5, 1.5f, 2})
            : new SamplingOptions(
                1, 0, 0, 0, new int[] {NoopLanguageModel.EOS}, new float[] {-100});
    String id = "sampling-bench-" + i;
    return new GenerationRequest(
        id,
        i + 1,
        1,
        prompt,
        maxTokens,
        0.8,
        i,
        TimeUnit.HOURS.toNanos(1),
        TokenListener.NONE,
        id,
        o,
        1,
        StopCondition.NONE,
        sampling.equals("logprobs") ? 5 : -1);
  }
}
