package io.gpumeter.batching;

/**
 * Log probabilities from one row of raw logits: {@code log p(t) = x[t] - (max + log Σ exp(x -
 * max))} in double precision, and the {@code k} most likely tokens by partial insertion (O(V·k)
 * worst case, O(V) in practice since few logits beat the k-th best). One instance per scheduler
 * thread; its scratch is reused. Runs only for requests that ask for logprobs, on the scheduler
 * thread after the step is measured (host time, not device time, like sampling).
 */
final class LogSoftmax {
  /** The most alternatives a request may ask for (OpenAI's {@code top_logprobs} bound). */
  static final int MAX_TOP = 20;

  private final int vocab;
  private final int[] topIds = new int[MAX_TOP];
  private final float[] topValues = new float[MAX_TOP];

  LogSoftmax(int vocab) {
    this.vocab = vocab;
  }

  /**
   * @param row the model's raw logits for the position, {@code vocab} of them; not modified
   * @param token the token chosen at this position
   * @param k how many alternatives to report, 0 to {@link #MAX_TOP}
   */
  TokenLogprob of(float[] row, int token, int k) {
    float max = Float.NEGATIVE_INFINITY;
    for (int i = 0; i < vocab; i++) {
      if (row[i] > max) {
        max = row[i];
      }
    }
    double sum = 0;
    for (int i = 0; i < vocab; i++) {
      sum += Math.exp((double) row[i] - max);
    }
    double lse = max + Math.log(sum);
    int kept = Math.min(k, vocab);
    int n = 0;
    for (int i = 0; i < vocab && kept > 0; i++) {
      float x = row[i];
      if (n == kept && !(x > topValues[n - 1])) {
        continue; // not better than the k-th best (ties keep the lower id)
      }
      int at = n < kept ? n++ : n - 1;
      while (at > 0 && x > topValues[at - 1]) {
        topValues[at] = topValues[at - 1];
        topIds[at] = topIds[at - 1];
        at--;
      }
      topValues[at] = x;
      topIds[at] = i;
    }
    int[] ids = new int[n];
    float[] lps = new float[n];
    for (int j = 0; j < n; j++) {
      ids[j] = topIds[j];
      lps[j] = (float) (topValues[j] - lse);
    }
    return new TokenLogprob(token, (float) (row[token] - lse), ids, lps);
  }
}
