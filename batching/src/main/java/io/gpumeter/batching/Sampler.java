package io.gpumeter.batching;

import java.util.SplittableRandom;

/** Greedy and temperature sampling over one row of logits, in place, without allocation. */
final class Sampler {
  private Sampler() {}

  /**
   * @param row logits; overwritten when {@code temperature > 0}
   * @param temperature 0 for greedy (argmax, lowest index on ties)
   */
  static int sample(float[] row, int vocab, double temperature, SplittableRandom rng) {
    int best = 0;
    float max = row[0];
    for (int i = 1; i < vocab; i++) {
      if (row[i] > max) {
        max = row[i];
        best = i;
      }
    }
    if (temperature == 0 || !Float.isFinite(max)) {
      return best;
    }
    double sum = 0;
    double inv = 1.0 / temperature;
    for (int i = 0; i < vocab; i++) {
      double p = Math.exp((row[i] - max) * inv);
      row[i] = (float) p;
      sum += p;
    }
    double r = rng.nextDouble() * sum;
    double acc = 0;
    for (int i = 0; i < vocab; i++) {
      acc += row[i];
      if (r < acc) {
        return i;
      }
    }
    return best;
  }
}
