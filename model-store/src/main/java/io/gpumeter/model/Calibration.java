package io.gpumeter.model;

import io.gpumeter.metering.LinearWeightPolicy;
import io.gpumeter.metering.StepTimer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.Random;

/**
 * Calibration of the weight policy on a model and its device (issue 18): runs designed steps, times
 * them with the real step timer, and fits by least squares
 *
 * <pre>
 * T(step) = a + p · prefillTokens + d · decodeSequences + c · Σ contexts + q · Σ tokens×context
 * </pre>
 *
 * <p>where {@code Σ contexts} adds up every member's positions after the step and {@code Σ
 * tokens×context} every member's tokens times its positions (a prompt chunk's attention: each of
 * its tokens attends to up to its context; for a decode it equals its context). This is exactly the
 * sum of {@link LinearWeightPolicy} weights over the step with {@code (p, d, c, q)} as its weights,
 * so the fitted policy predicts each step's variable cost, and {@code a} is the step's fixed cost
 * (launches, the logits copy, the framework). How {@code a} is shared: see DESIGN.md, "What a share
 * means" (by weight).
 *
 * <p><b>Design:</b> prefill tokens {0, 8, 32, 128, 256} (in chunks of at most 128, as the scheduler
 * sends them), decode sequences {0, 1, 4, 16}, contexts {64, half, nearly all of the model's
 * context length}; a prefill chunk ends at the step's context (a later chunk of a long prompt) so
 * the context term is not tied to the prefill term, and chunks of 8 to 128 tokens at each context
 * separate the per-chunk context term {@code c} from the per-token one {@code q}. Every (point,
 * repeat) runs in a shuffled order so that load on a shared machine spreads over all points; each
 * point's median is fitted.
 *
 * <p><b>Fit:</b> ordinary least squares on the medians, solved from the normal equations; a slope
 * that comes out negative is fixed at 0 and the rest refitted (a weight cannot be negative). The
 * fit's R² and each point's residual are reported. Calibration time is system time: the caller runs
 * it outside serving and charges it to nobody.
 */
public final class Calibration {
  private Calibration() {}

  /** Terms of the fit: intercept, prefill, decode, context, tokens×context. */
  static final int TERMS = 5;

  /** Prefill tokens per chunk, as the scheduler's default {@code prefillChunk}. */
  static final int CHUNK = 128;

  /**
   * One design point and its measurements.
   *
   * @param shape the step that was run
   * @param samplesNs every measurement of it, in the order taken
   */
  public record Measured(StepShape shape, long[] samplesNs) {
    public long medianNs() {
      return median(samplesNs);
    }
  }

  /**
   * The fitted model. Times in nanoseconds (per token, per sequence, per context position).
   *
   * @param residualsNs measured median minus predicted, per point, in the order of {@code points}
   */
  public record Fit(
      double interceptNs,
      double prefillPerTokenNs,
      double decodePerSequenceNs,
      double contextPerTokenNs,
      double tokenContextNs,
      double r2,
      double rmsResidualNs,
      List<Measured> points,
      double[] residualsNs) {

    /** Predicted step time of {@code s}. */
    public double predictNs(StepShape s) {
      return interceptNs
          + prefillPerTokenNs * s.prefillTokens()
          + decodePerSequenceNs * s.decodes()
          + contextPerTokenNs * s.contextSum()
          + tokenContextNs * s.tokenContextSum();
    }

    /**
     * The integer policy: each coefficient in picoseconds, rounded (at least one stays positive).
     *
     * @throws IllegalStateException if every slope rounds to 0 (nothing to split by)
     */
    public LinearWeightPolicy policy() {
      long p = Math.round(prefillPerTokenNs * 1000);
      long d = Math.round(decodePerSequenceNs * 1000);
      long c = Math.round(contextPerTokenNs * 1000);
      long q = Math.round(tokenContextNs * 1000);
      if (p <= 0 && d <= 0 && c <= 0 && q <= 0) {
        throw new IllegalStateException("the fit found no positive cost per token: " + this);
      }
      return new LinearWeightPolicy(Math.max(0, p), Math.max(0, d), Math.max(0, c), Math.max(0, q));
    }

    /** A table of the points and residuals, and the fit's statistics. */
    public String report() {
      StringBuilder sb = new StringBuilder();
      sb.append(
          String.format(
              Locale.ROOT,
              "%9s %8s %8s %10s %12s %12s %9s%n",
              "prefill",
              "decodes",
              "contexts",
              "samples",
              "median_ns",
              "predicted_ns",
              "resid_%"));
      for (int i = 0; i < points.size(); i++) {
        Measured m = points.get(i);
        double pred = predictNs(m.shape());
        sb.append(
            String.format(
                Locale.ROOT,
                "%9d %8d %8d %10d %12d %12.0f %+8.1f%%%n",
                m.shape().prefillTokens(),
                m.shape().decodes(),
                m.shape().contextSum(),
                m.samplesNs().length,
                m.medianNs(),
                pred,
                100.0 * residualsNs[i] / Math.max(1, pred)));
      }
      sb.append(
          String.format(
              Locale.ROOT,
              "fit: T = %.0f ns + %.1f ns/prefill token + %.1f ns/decode + %.3f ns/context"
                  + " position + %.4f ns/(token x position)%nR^2 = %.4f, rms residual = %.0f ns"
                  + " over %d points%n",
              interceptNs,
              prefillPerTokenNs,
              decodePerSequenceNs,
              contextPerTokenNs,
              tokenContextNs,
              r2,
              rmsResidualNs,
              points.size()));
      return sb.toString();
    }
  }

  /** The designed steps for a model of context length {@code contextLength}. */
  public static List<StepShape> design(int contextLength) {
    int[] prefills = {0, 8, 32, 128, 256};
    int[] decodes = {0, 1, 4, 16};
    int[] contexts = {
      Math.min(64, contextLength), Math.max(1, contextLength / 2), Math.max(1, contextLength - 8)
    };
    List<StepShape> out = new ArrayList<>();
    for (int ctx : contexts) {
      for (int p : prefills) {
        for (int d : decodes) {
          if (p == 0 && d == 0) {
            continue;
          }
          out.add(shape(p, d, ctx));
        }
      }
    }
    return out;
  }

  /** {@code decodes} decode members at context {@code context}, then prefill chunks. */
  public static StepShape shape(int prefillTokens, int decodes, int context) {
    List<StepShape.Member> members = new ArrayList<>();
    for (int i = 0; i < decodes; i++) {
      members.add(new StepShape.Member(false, 1, context));
    }
    for (int left = prefillTokens; left > 0; left -= CHUNK) {
      int len = Math.min(CHUNK, left);
      members.add(new StepShape.Member(true, len, Math.max(len, context)));
    }
    return new StepShape(members);
  }

  /**
   * Runs every shape {@code repeats} times in a shuffled order, timing each step with {@code
   * timer}. The model's cache is allocated here and released after.
   */
  public static List<Measured> measure(
      LanguageModel model, StepTimer timer, List<StepShape> shapes, int repeats, long seed) {
    if (repeats < 1) {
      throw new IllegalArgumentException("repeats must be >= 1, was " + repeats);
    }
    ModelConfig c = model.config();
    int slots = shapes.stream().mapToInt(s -> s.members().size()).max().orElse(1);
    int tokens = shapes.stream().mapToInt(s -> s.prefillTokens() + s.decodes()).max().orElse(1);
    List<int[]> runs = new ArrayList<>();
    for (int r = 0; r < repeats; r++) {
      for (int i = 0; i < shapes.size(); i++) {
        runs.add(new int[] {i, r});
      }
    }
    Collections.shuffle(runs, new Random(seed));
    long[][] samples = new long[shapes.size()][repeats];
    StepBatch batch = new StepBatch(tokens, slots);
    float[][] logits = new float[slots][c.vocabSize()];
    try (KvCache cache = model.newCache(slots)) {
      for (int[] run : runs) {
        shapes.get(run[0]).fill(batch, c.vocabSize(), c.contextLength());
        samples[run[0]][run[1]] = time(model, timer, batch, cache, logits);
      }
    }
    List<Measured> out = new ArrayList<>();
    for (int i = 0; i < shapes.size(); i++) {
      out.add(new Measured(shapes.get(i), samples[i]));
    }
    return out;
  }

  /** One timed step, measured like the scheduler measures it (the span closes in finally). */
  public static long time(
      LanguageModel model, StepTimer timer, StepBatch batch, KvCache cache, float[][] logits) {
    StepTimer.Span span = timer.begin();
    long ns;
    try {
      model.step(batch, cache, logits);
    } finally {
      ns = span.end();
    }
    return ns;
  }

  /**
   * Fits the points' medians.
   *
   * @throws IllegalArgumentException with fewer than 5 points
   */
  public static Fit fit(List<Measured> points) {
    return fit(points, true);
  }

  /**
   * Fits the points' medians, with or without the tokens×context term (without it: the form of
   * format-1 weight files, kept to compare the two).
   *
   * @throws IllegalArgumentException with fewer than 5 points
   */
  public static Fit fit(List<Measured> points, boolean tokenContext) {
    int n = points.size();
    if (n < TERMS) {
      throw new IllegalArgumentException(
          "need at least " + TERMS + " points to fit " + TERMS + " terms, got " + n);
    }
    double[][] x = new double[n][];
    double[] y = new double[n];
    for (int i = 0; i < n; i++) {
      StepShape s = points.get(i).shape();
      x[i] = new double[] {1, s.prefillTokens(), s.decodes(), s.contextSum(), s.tokenContextSum()};
      y[i] = points.get(i).medianNs();
    }
    boolean[] active = new boolean[TERMS];
    Arrays.fill(active, true);
    active[TERMS - 1] = tokenContext;
    double[] beta;
    while (true) {
      beta = solve(x, y, active);
      int worst = -1;
      for (int j = 1; j < TERMS; j++) { // the intercept may have any sign
        if (active[j] && beta[j] < 0 && (worst < 0 || beta[j] < beta[worst])) {
          worst = j;
        }
      }
      if (worst < 0) {
        break;
      }
      active[worst] = false;
    }
    double mean = Arrays.stream(y).average().orElse(0);
    double ssRes = 0;
    double ssTot = 0;
    double[] residuals = new double[n];
    for (int i = 0; i < n; i++) {
      double pred = 0;
      for (int j = 0; j < TERMS; j++) {
        pred += beta[j] * x[i][j];
      }
      residuals[i] = y[i] - pred;
      ssRes += residuals[i] * residuals[i];
      ssTot += (y[i] - mean) * (y[i] - mean);
    }
    double r2 = ssTot == 0 ? 1 : 1 - ssRes / ssTot;
    return new Fit(
        beta[0],
        beta[1],
        beta[2],
        beta[3],
        beta[4],
        r2,
        Math.sqrt(ssRes / n),
        List.copyOf(points),
        residuals);
  }

  /** Least squares on the active columns (the others fixed at 0): normal equations, pivoting. */
  static double[] solve(double[][] x, double[] y, boolean[] active) {
    int k = 0;
    int[] cols = new int[active.length];
    for (int j = 0; j < active.length; j++) {
      if (active[j]) {
        cols[k++] = j;
      }
    }
    // Scale each column to unit size so the normal equations are well conditioned.
    double[] scale = new double[k];
    for (int a = 0; a < k; a++) {
      double s = 0;
      for (double[] row : x) {
        s = Math.max(s, Math.abs(row[cols[a]]));
      }
      scale[a] = s == 0 ? 1 : s;
    }
    double[][] m = new double[k][k + 1];
    for (int i = 0; i < x.length; i++) {
      for (int a = 0; a < k; a++) {
        double xa = x[i][cols[a]] / scale[a];
        for (int b = 0; b < k; b++) {
          m[a][b] += xa * x[i][cols[b]] / scale[b];
        }
        m[a][k] += xa * y[i];
      }
    }
    for (int p = 0; p < k; p++) {
      int piv = p;
      for (int r = p + 1; r < k; r++) {
        if (Math.abs(m[r][p]) > Math.abs(m[piv][p])) {
          piv = r;
        }
      }
      double[] t = m[p];
      m[p] = m[piv];
      m[piv] = t;
      if (Math.abs(m[p][p]) < 1e-12) {
        throw new IllegalArgumentException("the design does not determine term " + cols[p]);
      }
      for (int r = 0; r < k; r++) {
        if (r != p) {
          double f = m[r][p] / m[p][p];
          for (int q = p; q <= k; q++) {
            m[r][q] -= f * m[p][q];
          }
        }
      }
    }
    double[] beta = new double[active.length];
    for (int a = 0; a < k; a++) {
      beta[cols[a]] = m[a][k] / m[a][a] / scale[a];
    }
    return beta;
  }

  static long median(long[] values) {
    long[] s = values.clone();
    Arrays.sort(s);
    int n = s.length;
    return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  }
}
