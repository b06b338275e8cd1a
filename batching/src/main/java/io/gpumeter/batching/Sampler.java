package io.gpumeter.batching;

import java.util.SplittableRandom;

/**
 * Chooses the next token from one row of logits, in place, without allocating: greedy (temperature
 * 0), temperature, {@code logit_bias}, presence and frequency penalties, top-k and top-p ({@link
 * SamplingOptions} gives the order). One instance per scheduler thread; its scratch heap is reused
 * for every row.
 *
 * <p><b>Cost:</b> the neutral options add one branch each. Penalties cost one pass over the
 * distinct tokens generated so far (at most the vocabulary). Top-k and top-p do not sort the
 * vocabulary. With {@code top_k} below the candidates, the k best are selected with a min-heap of k
 * (one comparison for each candidate that does not beat the k-th best) and sorted, O(V + k log k),
 * then kept best first until the probability mass {@code top_p} is reached. With {@code top_p}
 * alone they build a binary max-heap of the candidates in O(V) and pop the most probable ones until
 * the mass is reached, O(V + m log V) for m kept tokens. Exactly one random draw is taken per
 * sampled token (none when greedy), so a seeded request gives the same tokens whatever else is in
 * its batch.
 */
final class Sampler {
  private final int vocab;

  /** Candidates as (probability bits, ~token id): ordered by probability, then lower id first. */
  private final long[] heap;

  Sampler(int vocab) {
    if (vocab < 1) {
      throw new IllegalArgumentException("vocabulary must have at least one token, was " + vocab);
    }
    this.vocab = vocab;
    this.heap = new long[vocab];
  }

  /**
   * Greedy or temperature sampling with no other option (kept for callers that have none).
   *
   * @param row logits; overwritten when {@code temperature > 0}
   */
  int sample(float[] row, double temperature, SplittableRandom rng) {
    return sample(row, temperature, SamplingOptions.NONE, null, null, 0, rng);
  }

  /**
   * @param row the model's logits for this sequence, {@code vocab} of them; overwritten
   * @param temperature 0 for greedy (argmax, lowest index on ties)
   * @param counts how often each token was generated so far (indexed by token id); read only when
   *     {@code seenCount > 0}
   * @param seen the distinct tokens generated so far, {@code seenCount} of them
   * @return the chosen token id
   */
  int sample(
      float[] row,
      double temperature,
      SamplingOptions o,
      int[] counts,
      int[] seen,
      int seenCount,
      SplittableRandom rng) {
    if (o.biasCount() > 0) {
      applyBias(row, o);
    }
    if (seenCount > 0) {
      float presence = (float) o.presencePenalty();
      float frequency = (float) o.frequencyPenalty();
      for (int j = 0; j < seenCount; j++) {
        int t = seen[j];
        row[t] -= frequency * counts[t] + presence;
      }
    }
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
    double inv = 1.0 / temperature;
    double sum = 0;
    for (int i = 0; i < vocab; i++) {
      float p = (float) Math.exp((row[i] - max) * inv);
      row[i] = p;
      sum += p;
    }
    if (o.truncates()) {
      return truncated(row, o, sum, rng, best);
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

  /** Bans (-100), exclusive picks (+100) and plain biases, on the raw logits. */
  private void applyBias(float[] row, SamplingOptions o) {
    int exclusive = 0;
    for (int j = 0; j < o.biasCount(); j++) {
      int t = o.biasToken(j);
      float b = o.biasValue(j);
      if (b <= SamplingOptions.BAN_BIAS) {
        row[t] = Float.NEGATIVE_INFINITY;
      } else {
        row[t] += b;
        if (b >= SamplingOptions.EXCLUSIVE_BIAS) {
          heap[exclusive++] = Float.floatToRawIntBits(row[t]);
        }
      }
    }
    if (exclusive == 0) {
      return;
    }
    java.util.Arrays.fill(row, 0, vocab, Float.NEGATIVE_INFINITY);
    int k = 0;
    for (int j = 0; j < o.biasCount(); j++) {
      if (o.biasValue(j) >= SamplingOptions.EXCLUSIVE_BIAS) {
        row[o.biasToken(j)] = Float.intBitsToFloat((int) heap[k++]);
      }
    }
  }

  /**
   * Top-k / top-p over probabilities already in {@code row} (unnormalised, summing to {@code sum}).
   */
  private int truncated(
      float[] row, SamplingOptions o, double sum, SplittableRandom rng, int best) {
    int n = 0;
    for (int i = 0; i < vocab; i++) {
      float p = row[i];
      if (p > 0) {
        heap[n++] = ((long) Float.floatToRawIntBits(p) << 32) | (0xFFFFFFFFL & ~i);
      }
    }
    if (n == 0) {
      return best;
    }
    if (o.topK() > 0 && o.topK() < n) {
      return topK(n, o.topK(), o.topP() * sum, rng);
    }
    for (int i = (n >>> 1) - 1; i >= 0; i--) {
      siftDown(i, n);
    }
    int limit = n;
    double target = o.topP() * sum;
    double mass = 0;
    int end = n;
    while (n - end < limit) {
      long top = heap[0];
      end--;
      heap[0] = heap[end];
      heap[end] = top;
      siftDown(0, end);
      mass += probability(top);
      if (mass >= target) {
        break;
      }
    }
    double r = rng.nextDouble() * mass;
    double acc = 0;
    for (int i = n - 1; i >= end; i--) {
      acc += probability(heap[i]);
      if (r < acc) {
        return token(heap[i]);
      }
    }
    return token(heap[n - 1]);
  }

  /**
   * Top-k (then top-p) over the {@code n} candidates in {@code heap[0..n)}: the {@code k} best are
   * selected into a min-heap of size k at the front (one comparison per candidate that does not
   * beat the k-th best), sorted, and taken best first until the mass reaches {@code target}, the
   * same tokens in the same order (so the same draw picks the same token) as popping them from a
   * max-heap of all n, in O(n + k log k) instead of O(n + k log n) and without sifting all n.
   */
  private int topK(int n, int k, double target, SplittableRandom rng) {
    for (int i = (k >>> 1) - 1; i >= 0; i--) {
      siftDownMin(i, k);
    }
    for (int i = k; i < n; i++) {
      long key = heap[i];
      if (key > heap[0]) {
        heap[0] = key;
        siftDownMin(0, k);
      }
    }
    java.util.Arrays.sort(heap, 0, k); // ascending: the best is heap[k - 1]
    double mass = 0;
    int end = k;
    while (end > 0) {
      end--;
      mass += probability(heap[end]);
      if (mass >= target) {
        break;
      }
    }
    double r = rng.nextDouble() * mass;
    double acc = 0;
    for (int i = k - 1; i >= end; i--) {
      acc += probability(heap[i]);
      if (r < acc) {
        return token(heap[i]);
      }
    }
    return token(heap[k - 1]);
  }

  private void siftDownMin(int i, int size) {
    long x = heap[i];
    while (true) {
      int child = 2 * i + 1;
      if (child >= size) {
        break;
      }
      if (child + 1 < size && heap[child + 1] < heap[child]) {
        child++;
      }
      if (heap[child] >= x) {
        break;
      }
      heap[i] = heap[child];
      i = child;
    }
    heap[i] = x;
  }

  private void siftDown(int i, int size) {
    long x = heap[i];
    while (true) {
      int child = 2 * i + 1;
      if (child >= size) {
        break;
      }
      if (child + 1 < size && heap[child + 1] > heap[child]) {
        child++;
      }
      if (heap[child] <= x) {
        break;
      }
      heap[i] = heap[child];
      i = child;
    }
    heap[i] = x;
  }

  private static float probability(long key) {
    return Float.intBitsToFloat((int) (key >>> 32));
  }

  private static int token(long key) {
    return ~(int) key;
  }
}
