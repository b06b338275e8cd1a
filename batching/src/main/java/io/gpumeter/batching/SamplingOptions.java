package io.gpumeter.batching;

import java.util.Arrays;

/**
 * How the next token is chosen beyond temperature, with OpenAI's definitions. Validated here, so
 * the scheduler never sees an impossible value. The neutral options ({@link #NONE}) cost nothing on
 * the scheduler thread.
 *
 * <p>Order of application, per token (the same as OpenAI and vLLM): the model's logits, then {@code
 * logit_bias}, then the penalties, then temperature (0: argmax, done), then {@code top_k}, then
 * {@code top_p}, then one draw from the request's seeded generator.
 *
 * @param topP nucleus sampling: keep the smallest set of most probable tokens whose probability
 *     (after temperature) reaches {@code topP}; in [0, 1], 1 is off, 0 keeps only the most probable
 *     token
 * @param topK keep only the {@code topK} most probable tokens; 0 is off (an extension, not in
 *     OpenAI's API)
 * @param presencePenalty subtracted once from the logit of every token generated so far, in [-2, 2]
 * @param frequencyPenalty subtracted from the logit of every token generated so far, times the
 *     number of times it was generated, in [-2, 2]
 * @param biasTokens token ids of {@code logit_bias}, distinct, each in [0, vocabulary); checked
 *     against the model's vocabulary by {@link ContinuousScheduler#submit}
 * @param biasValues the bias added to the logit of {@code biasTokens[i]}, in [-100, 100]; -100 bans
 *     the token, 100 makes the tokens biased by 100 the only candidates (OpenAI: "values like -100
 *     or 100 should result in a ban or exclusive selection of the relevant token")
 */
public record SamplingOptions(
    double topP,
    int topK,
    double presencePenalty,
    double frequencyPenalty,
    int[] biasTokens,
    float[] biasValues) {

  /** No option: plain temperature sampling (or greedy at temperature 0). */
  public static final SamplingOptions NONE =
      new SamplingOptions(1.0, 0, 0, 0, new int[0], new float[0]);

  /** A bias of this size or more picks only the tokens it is given to. */
  public static final float EXCLUSIVE_BIAS = 100f;

  /** A bias of this size or less bans the token. */
  public static final float BAN_BIAS = -100f;

  public SamplingOptions {
    if (!(topP >= 0 && topP <= 1)) {
      throw new IllegalArgumentException("topP must be in [0, 1], was " + topP);
    }
    if (topK < 0) {
      throw new IllegalArgumentException("topK must be >= 0, was " + topK);
    }
    if (!(presencePenalty >= -2 && presencePenalty <= 2)) {
      throw new IllegalArgumentException(
          "presencePenalty must be in [-2, 2], was " + presencePenalty);
    }
    if (!(frequencyPenalty >= -2 && frequencyPenalty <= 2)) {
      throw new IllegalArgumentException(
          "frequencyPenalty must be in [-2, 2], was " + frequencyPenalty);
    }
    biasTokens = biasTokens.clone();
    biasValues = biasValues.clone();
    if (biasTokens.length != biasValues.length) {
      throw new IllegalArgumentException(
          biasTokens.length + " bias tokens but " + biasValues.length + " bias values");
    }
    int[] sorted = biasTokens.clone();
    Arrays.sort(sorted);
    for (int i = 0; i < sorted.length; i++) {
      if (sorted[i] < 0) {
        throw new IllegalArgumentException("bias token id " + sorted[i] + " is negative");
      }
      if (i > 0 && sorted[i] == sorted[i - 1]) {
        throw new IllegalArgumentException("bias token id " + sorted[i] + " given twice");
      }
    }
    for (float b : biasValues) {
      if (!(b >= BAN_BIAS && b <= EXCLUSIVE_BIAS)) {
        throw new IllegalArgumentException("bias must be in [-100, 100], was " + b);
      }
    }
  }

  /** Whether the sampler must count the tokens generated so far. */
  public boolean penalized() {
    return presencePenalty != 0 || frequencyPenalty != 0;
  }

  /** Whether top-k or top-p truncates the distribution. */
  boolean truncates() {
    return topK > 0 || topP < 1;
  }

  /** How many tokens are biased by {@link #EXCLUSIVE_BIAS}. */
  int exclusiveCount() {
    int n = 0;
    for (float b : biasValues) {
      if (b >= EXCLUSIVE_BIAS) {
        n++;
      }
    }
    return n;
  }

  int biasCount() {
    return biasTokens.length;
  }

  int biasToken(int i) {
    return biasTokens[i];
  }

  float biasValue(int i) {
    return biasValues[i];
  }

  @Override
  public int[] biasTokens() {
    return biasTokens.clone();
  }

  @Override
  public float[] biasValues() {
    return biasValues.clone();
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof SamplingOptions s
        && Double.compare(topP, s.topP) == 0
        && topK == s.topK
        && Double.compare(presencePenalty, s.presencePenalty) == 0
        && Double.compare(frequencyPenalty, s.frequencyPenalty) == 0
        && Arrays.equals(biasTokens, s.biasTokens)
        && Arrays.equals(biasValues, s.biasValues);
  }

  @Override
  public int hashCode() {
    return Double.hashCode(topP) * 31
        + topK
        + 17 * Arrays.hashCode(biasTokens)
        + Arrays.hashCode(biasValues);
  }

  @Override
  public String toString() {
    return "SamplingOptions[topP="
        + topP
        + ", topK="
        + topK
        + ", presencePenalty="
        + presencePenalty
        + ", frequencyPenalty="
        + frequencyPenalty
        + ", logitBias="
        + biasTokens.length
        + " tokens]";
  }
}
