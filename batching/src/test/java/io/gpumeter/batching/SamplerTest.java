package io.gpumeter.batching;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Distribution properties of the sampler, with seeded randomness (no model needed). */
class SamplerTest {
  private static final int VOCAB = 257;
  private static final int DRAWS = 4000;

  private final Sampler sampler = new Sampler(VOCAB);

  /** A fixed, varied row of logits: token 7 is the most likely, then 3, then the others. */
  private static float[] logits() {
    float[] row = new float[VOCAB];
    SplittableRandom r = new SplittableRandom(1);
    for (int i = 0; i < VOCAB; i++) {
      row[i] = (float) r.nextGaussian();
    }
    row[7] = 4f;
    row[3] = 3.5f;
    return row;
  }

  private static SamplingOptions options(double topP, int topK, double presence, double frequency) {
    return new SamplingOptions(topP, topK, presence, frequency, new int[0], new float[0]);
  }

  private static SamplingOptions bias(int token, float value) {
    return new SamplingOptions(1, 0, 0, 0, new int[] {token}, new float[] {value});
  }

  private int[] histogram(double temperature, SamplingOptions o, long seed) {
    int[] hist = new int[VOCAB];
    SplittableRandom rng = new SplittableRandom(seed);
    for (int i = 0; i < DRAWS; i++) {
      hist[sampler.sample(logits(), temperature, o, null, null, 0, rng)]++;
    }
    return hist;
  }

  private static int distinct(int[] hist) {
    int n = 0;
    for (int h : hist) {
      if (h > 0) {
        n++;
      }
    }
    return n;
  }

  @Test
  void temperatureZeroIsArgmaxAndPlainSamplingSpreads() {
    assertThat(histogram(0, SamplingOptions.NONE, 1)[7]).isEqualTo(DRAWS);
    int[] hist = histogram(1, SamplingOptions.NONE, 1);
    assertThat(distinct(hist)).as("temperature 1 reaches many tokens").isGreaterThan(50);
    assertThat(hist[7]).as("the most likely token is drawn most").isEqualTo(max(hist));
  }

  @Test
  void topKOneAndATinyTopPAreGreedy() {
    assertThat(histogram(1.5, options(1, 1, 0, 0), 2)[7]).isEqualTo(DRAWS);
    assertThat(histogram(1.5, options(1e-6, 0, 0, 0), 3)[7]).isEqualTo(DRAWS);
    assertThat(histogram(1.5, options(0, 0, 0, 0), 3)[7]).isEqualTo(DRAWS);
  }

  @Test
  void topKKeepsExactlyTheKMostLikelyTokens() {
    int[] hist = histogram(2, options(1, 2, 0, 0), 4);
    assertThat(distinct(hist)).isEqualTo(2);
    assertThat(hist[7] + hist[3]).isEqualTo(DRAWS);
    // 7 and 3 differ by 0.5 in logit: at temperature 2, p(7)/p(3) = e^0.25 = 1.28
    assertThat((double) hist[7] / hist[3]).isBetween(1.1, 1.5);
  }

  @Test
  void topPKeepsTheSmallestSetThatReachesTheMass() {
    float[] row = logits();
    double max = 4;
    double sum = 0;
    for (float v : row) {
      sum += Math.exp(v - max);
    }
    double p7 = 1 / sum;
    double p3 = Math.exp(-0.5) / sum;
    // just above p(7): token 7 alone is not enough, 7 and 3 are
    int[] hist = histogram(1, options(p7 + 0.01, 0, 0, 0), 5);
    assertThat(p7 + p3).isGreaterThan(p7 + 0.01);
    assertThat(distinct(hist)).isEqualTo(2);
    assertThat(hist[7] + hist[3]).isEqualTo(DRAWS);
    // top_p 0.9 keeps many, but not all, tokens
    int[] wide = histogram(1, options(0.9, 0, 0, 0), 6);
    assertThat(distinct(wide)).isBetween(3, distinct(histogram(1, SamplingOptions.NONE, 6)) - 1);
  }

  @Test
  void logitBiasMinus100NeverPicksTheTokenAndPlus100AlwaysDoes() {
    assertThat(histogram(0, bias(7, -100), 7)[7]).isZero();
    assertThat(histogram(0, bias(7, -100), 7)[3]).isEqualTo(DRAWS);
    assertThat(histogram(2, bias(7, -100), 8)[7]).isZero();
    // token 200 is unlikely; +100 picks it at every temperature
    assertThat(histogram(2, bias(200, 100), 9)[200]).isEqualTo(DRAWS);
    assertThat(histogram(0, bias(200, 100), 9)[200]).isEqualTo(DRAWS);
    // a moderate bias shifts the odds without forcing
    int[] shifted = histogram(1, bias(3, 1), 10);
    int[] plain = histogram(1, SamplingOptions.NONE, 10);
    assertThat(shifted[3]).isGreaterThan(plain[3]);
  }

  @Test
  void penaltiesLowerRepeats() {
    // the sequence so far repeated token 7 three times and token 3 once
    int[] counts = new int[VOCAB];
    counts[7] = 3;
    counts[3] = 1;
    int[] seen = {7, 3};
    // greedy: frequency 2 takes 6 off token 7 (4 - 6 < 3.5 - 2): neither repeated token wins
    SplittableRandom rng = new SplittableRandom(11);
    int greedy = sampler.sample(logits(), 0, options(1, 0, 0, 2), counts, seen, 2, rng);
    assertThat(greedy).isNotIn(7, 3);
    // presence 2 takes 2 off each: 7 (4 - 2) still beats the others only if they are below 2
    int presence = sampler.sample(logits(), 0, options(1, 0, 2, 0), counts, seen, 2, rng);
    float[] row = logits();
    int expected = 0;
    for (int i = 0; i < VOCAB; i++) {
      float v = row[i] - (i == 7 || i == 3 ? 2f : 0f);
      float e = row[expected] - (expected == 7 || expected == 3 ? 2f : 0f);
      if (v > e) {
        expected = i;
      }
    }
    assertThat(presence).isEqualTo(expected);
    // sampled: repeats get rarer as the penalty grows
    int before = 0;
    int after = 0;
    SplittableRandom a = new SplittableRandom(12);
    SplittableRandom b = new SplittableRandom(12);
    for (int i = 0; i < DRAWS; i++) {
      int t = sampler.sample(logits(), 1, SamplingOptions.NONE, counts, seen, 0, a);
      before += t == 7 || t == 3 ? 1 : 0;
      int u = sampler.sample(logits(), 1, options(1, 0, 0.5, 0.5), counts, seen, 2, b);
      after += u == 7 || u == 3 ? 1 : 0;
    }
    assertThat(after).isLessThan(before / 2);
  }

  @Test
  void theSameSeedGivesTheSameDraws() {
    SamplingOptions all = new SamplingOptions(0.8, 40, 0.3, 0.2, new int[] {5}, new float[] {2});
    assertThat(histogram(1.2, all, 99)).isEqualTo(histogram(1.2, all, 99));
    assertThat(histogram(1.2, all, 99)).isNotEqualTo(histogram(1.2, all, 100));
  }

  @Test
  void badOptionsAreRefused() {
    assertThatThrownBy(() -> options(1.5, 0, 0, 0)).hasMessageContaining("topP");
    assertThatThrownBy(() -> options(1, -1, 0, 0)).hasMessageContaining("topK");
    assertThatThrownBy(() -> options(1, 0, 2.5, 0)).hasMessageContaining("presencePenalty");
    assertThatThrownBy(() -> options(1, 0, 0, -3)).hasMessageContaining("frequencyPenalty");
    assertThatThrownBy(() -> bias(3, 101)).hasMessageContaining("[-100, 100]");
    assertThatThrownBy(() -> new SamplingOptions(1, 0, 0, 0, new int[] {3, 3}, new float[] {1, 2}))
        .hasMessageContaining("twice");
  }

  private static int max(int[] hist) {
    int m = 0;
    for (int h : hist) {
      m = Math.max(m, h);
    }
    return m;
  }

  /**
   * Top-k by selection keeps exactly the tokens, in the order, that sorting all candidates keeps,
   * so one draw picks the same token: checked against a plain sort on random rows (with ties, zero
   * probabilities, and k below, at and above the candidates), every top_p and temperature.
   */
  @Test
  void topKSelectionPicksWhatSortingAllCandidatesPicks() {
    SplittableRandom gen = new SplittableRandom(99);
    for (int trial = 0; trial < 3000; trial++) {
      float[] row = new float[VOCAB];
      for (int i = 0; i < VOCAB; i++) {
        row[i] =
            switch (gen.nextInt(4)) {
              case 0 -> (float) gen.nextInt(4); // ties
              case 1 -> Float.NEGATIVE_INFINITY; // banned: probability 0
              default -> (float) (3 * gen.nextGaussian());
            };
      }
      int k = 1 + gen.nextInt(gen.nextBoolean() ? 12 : 300);
      double topP = gen.nextBoolean() ? 1.0 : 0.05 + 0.95 * gen.nextDouble();
      double temperature = 0.2 + 1.5 * gen.nextDouble();
      long seed = gen.nextLong();
      int got =
          sampler.sample(
              row.clone(),
              temperature,
              options(topP, k, 0, 0),
              null,
              null,
              0,
              new SplittableRandom(seed));
      assertThat(got)
          .as("trial %d: k %d, top_p %s, temperature %s", trial, k, topP, temperature)
          .isEqualTo(sortedReference(row, temperature, topP, k, new SplittableRandom(seed)));
    }
  }

  /** The definition: candidates by probability (ties: lower id), best first, up to k and top_p. */
  private static int sortedReference(
      float[] logits, double temperature, double topP, int k, SplittableRandom rng) {
    float max = Float.NEGATIVE_INFINITY;
    int best = 0;
    for (int i = 0; i < VOCAB; i++) {
      if (logits[i] > max) {
        max = logits[i];
        best = i;
      }
    }
    if (!Float.isFinite(max)) {
      return best;
    }
    double inv = 1.0 / temperature;
    float[] p = new float[VOCAB];
    double sum = 0;
    for (int i = 0; i < VOCAB; i++) {
      p[i] = (float) Math.exp((logits[i] - max) * inv);
      sum += p[i];
    }
    Integer[] ids =
        java.util.stream.IntStream.range(0, VOCAB)
            .filter(i -> p[i] > 0)
            .boxed()
            .sorted((a, b) -> p[a] != p[b] ? Float.compare(p[b], p[a]) : Integer.compare(a, b))
            .toArray(Integer[]::new);
    double target = topP * sum;
    double mass = 0;
    int kept = 0;
    while (kept < Math.min(k, ids.length)) {
      mass += p[ids[kept++]];
      if (mass >= target) {
        break;
      }
    }
    double r = rng.nextDouble() * mass;
    double acc = 0;
    for (int j = 0; j < kept; j++) {
      acc += p[ids[j]];
      if (r < acc) {
        return ids[j];
      }
    }
    return ids[0];
  }
}
