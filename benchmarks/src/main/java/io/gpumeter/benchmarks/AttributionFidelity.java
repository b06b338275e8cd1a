package io.gpumeter.benchmarks;

import io.gpumeter.metering.LinearWeightPolicy;
import io.gpumeter.metering.StepTimer;
import io.gpumeter.metering.StepTimerFactory;
import io.gpumeter.metering.WeightPolicy;
import io.gpumeter.model.Calibration;
import io.gpumeter.model.KvCache;
import io.gpumeter.model.LanguageModel;
import io.gpumeter.model.ModelConfig;
import io.gpumeter.model.ModelStore;
import io.gpumeter.model.ServedModel;
import io.gpumeter.model.StepBatch;
import io.gpumeter.model.StepShape;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.Random;

/**
 * Attribution fidelity (issue 18): how close each sequence's share of a step is to what it really
 * cost, its marginal cost {@code T(batch) − T(batch without it)} on the same device.
 *
 * <p><b>Method.</b> The model is loaded and warmed; the weight policy is calibrated in this process
 * ({@link Calibration}, the {@code calibrate} command's design and fit, with and without its
 * tokens×context term). Then {@code --batches} batches are sampled at random (2 to 8 members; each
 * a decode at a random context, or a prompt chunk of 8 to 128 tokens at a random earlier context):
 * none of them is a calibration point.
 *
 * <p><b>Estimator (paired differences).</b> For each batch, {@code --repeats} rounds; each round
 * visits the members in a fresh shuffled order and, for each, times the whole batch and the batch
 * without that member back to back (which of the two runs first is a coin flip). The member's
 * difference in that round is one sample of its marginal cost: the two steps ran seconds apart at
 * most, so load that drifts over the run cancels. A member's marginal cost is the 20% trimmed mean
 * of its differences (the 20% largest and smallest dropped: a step that waited for the machine is
 * an outlier, not a sample); its standard error is the winsorized standard deviation over {@code (1
 * − 2·0.2)·√n} (Tukey–McLaughlin).
 *
 * <p><b>Error.</b> The fixed cost of a step is in every batch-without-one too, so marginal costs
 * never see it; shares are compared as fractions of the step, each against the member's fraction of
 * the batch's marginal costs (negative estimates counted as 0): {@code err_i = |w_i/Σw − m_i/Σm| /
 * (m_i/Σm)}. Two figures:
 *
 * <ul>
 *   <li><b>per member</b>, mean and p90 of {@code err_i}, only over <em>resolved</em> members:
 *       those whose marginal cost's standard error is at most {@code --max-rel-se} (default 10%) of
 *       it. An unresolved member's relative error is mostly measurement noise (a decode's marginal
 *       cost is a few percent of a step on a CPU), so it is counted but not averaged;
 *   <li><b>misattributed share of the variable time</b>, over all members of all batches: {@code ½
 *       Σ_i |w_i/Σw − m_i/Σm|} per batch (what one member gets too much another gets too little),
 *       averaged over batches. It weighs each member by its size, so small noisy members barely
 *       move it.
 * </ul>
 *
 * <p>Both for the default policy (tokens), the calibrated one, and the calibrated one without the
 * tokens×context term. The load average is printed at the start and the end.
 *
 * <p>{@code --timer thread-cpu} ({@link ThreadCpuStepTimer}) times steps by the scheduler thread's
 * CPU time, for a CPU shared with other work, where the wall clock mostly measures the wait for a
 * core. Run: {@code java -cp <benchmarks classpath> io.gpumeter.benchmarks.AttributionFidelity
 * [--models-dir models] [--device cpu] [--batches 16] [--repeats 21] [--calib-repeats 7]
 * [--max-rel-se 0.1] [--seed 18]}
 */
public final class AttributionFidelity {
  private AttributionFidelity() {}

  /** Share of each tail dropped by the trimmed mean. */
  static final double TRIM = 0.2;

  public static void main(String[] args) throws Exception {
    Path modelsDir = Path.of(arg(args, "--models-dir", "models"));
    String device = arg(args, "--device", "cpu");
    int batches = Integer.parseInt(arg(args, "--batches", "16"));
    int repeats = Integer.parseInt(arg(args, "--repeats", "21"));
    int calibRepeats = Integer.parseInt(arg(args, "--calib-repeats", "7"));
    double maxRelSe = Double.parseDouble(arg(args, "--max-rel-se", "0.1"));
    long seed = Long.parseLong(arg(args, "--seed", "18"));
    String timerKind = arg(args, "--timer", "device");
    if (!timerKind.equals("device") && !timerKind.equals("thread-cpu")) {
      throw new IllegalArgumentException("--timer is device or thread-cpu, was " + timerKind);
    }
    if (repeats < 5) {
      throw new IllegalArgumentException("--repeats must be >= 5 to trim, was " + repeats);
    }
    System.out.printf(
        Locale.ROOT,
        "attribution fidelity: device=%s timer=%s batches=%d repeats=%d calib-repeats=%d"
            + " max-rel-se=%.2f seed=%d%n",
        device,
        timerKind,
        batches,
        repeats,
        calibRepeats,
        maxRelSe,
        seed);
    System.out.println("load average at start: " + loadAverage());
    try (ModelStore store = ModelStore.open(modelsDir, device, StepTimerFactory.auto())) {
      ServedModel served = store.models().get(0);
      StepTimer timer = timerKind.equals("device") ? served.timer() : new ThreadCpuStepTimer();
      System.out.printf(
          "model %s on %s (%s timer, %s)%n",
          served.name(),
          served.timer().info().device(),
          timer.info().timerKind(),
          served.timer().info().deviceName());
      Result r = run(served.model(), timer, batches, repeats, calibRepeats, maxRelSe, seed);
      System.out.print(r.text());
      System.out.printf(
          Locale.ROOT,
          "RESULT check=attribution status=OK device=%s default_mean_pct=%.1f default_p90_pct=%.1f"
              + " calibrated_mean_pct=%.1f calibrated_p90_pct=%.1f nottc_mean_pct=%.1f"
              + " default_mis_pct=%.1f calibrated_mis_pct=%.1f nottc_mis_pct=%.1f resolved=%d"
              + " members=%d r2=%.4f%n",
          served.timer().info().device(),
          100 * r.defaultMean(),
          100 * r.defaultP90(),
          100 * r.calibratedMean(),
          100 * r.calibratedP90(),
          100 * r.noTcMean(),
          100 * r.defaultMis(),
          100 * r.calibratedMis(),
          100 * r.noTcMis(),
          r.resolved(),
          r.members(),
          r.r2());
    }
    System.out.println("load average at end: " + loadAverage());
  }

  /** The figures of one run (errors as fractions: 0.1 is 10%). */
  public record Result(
      String text,
      double defaultMean,
      double defaultP90,
      double calibratedMean,
      double calibratedP90,
      double noTcMean,
      double defaultMis,
      double calibratedMis,
      double noTcMis,
      int resolved,
      int members,
      double r2) {}

  /** A member's marginal cost: trimmed mean of its paired differences and its standard error. */
  record Marginal(double ns, double seNs) {}

  /** Calibrates, samples batches, measures and compares; see the class comment. */
  public static Result run(
      LanguageModel model,
      StepTimer timer,
      int batches,
      int repeats,
      int calibRepeats,
      double maxRelSe,
      long seed) {
    ModelConfig c = model.config();
    StringBuilder out = new StringBuilder();
    List<Calibration.Measured> points =
        Calibration.measure(
            model, timer, Calibration.design(c.contextLength()), calibRepeats, seed);
    Calibration.Fit fit = Calibration.fit(points);
    Calibration.Fit fitNoTc = Calibration.fit(points, false);
    out.append(fit.report());
    out.append("without the tokens x context term: R^2 = ")
        .append(String.format(Locale.ROOT, "%.4f", fitNoTc.r2()))
        .append(String.format(Locale.ROOT, ", rms residual = %.0f ns%n", fitNoTc.rmsResidualNs()));
    WeightPolicy tokens = WeightPolicy.tokens();
    LinearWeightPolicy calibrated = fit.policy();
    LinearWeightPolicy noTc = fitNoTc.policy();
    WeightPolicy[] policies = {tokens, calibrated, noTc};
    out.append("default policy:    ").append(tokens.describe()).append('\n');
    out.append("calibrated policy: ").append(calibrated.describe()).append('\n');
    out.append("calibrated, no tc: ").append(noTc.describe()).append('\n');

    Random rnd = new Random(seed);
    List<List<Double>> errs = List.of(new ArrayList<>(), new ArrayList<>(), new ArrayList<>());
    double[] mis = new double[policies.length];
    int misBatches = 0;
    int members = 0;
    List<Double> relSe = new ArrayList<>();
    out.append(
        String.format(
            Locale.ROOT,
            "%5s %4s %7s %6s %7s %11s %8s %8s %8s %8s %8s%n",
            "batch",
            "mem",
            "kind",
            "tokens",
            "context",
            "marginal_ns",
            "rel_se",
            "m_frac",
            "dflt",
            "cal",
            "cal_notc"));
    for (int b = 0; b < batches; b++) {
      StepShape batch = sample(rnd, c.contextLength());
      int n = batch.members().size();
      long[][] diffs = measurePaired(model, timer, batch, repeats, rnd);
      Marginal[] marginal = new Marginal[n];
      double sumM = 0;
      for (int i = 0; i < n; i++) {
        marginal[i] = marginal(diffs[i]);
        sumM += Math.max(0, marginal[i].ns());
      }
      double[][] frac = new double[policies.length][];
      for (int p = 0; p < policies.length; p++) {
        frac[p] = fractions(weights(batch, policies[p]));
      }
      if (sumM > 0) {
        for (int p = 0; p < policies.length; p++) {
          double d = 0;
          for (int i = 0; i < n; i++) {
            d += Math.abs(frac[p][i] - Math.max(0, marginal[i].ns()) / sumM);
          }
          mis[p] += d / 2;
        }
        misBatches++;
      }
      for (int i = 0; i < n; i++) {
        StepShape.Member m = batch.members().get(i);
        members++;
        double mf = sumM > 0 ? Math.max(0, marginal[i].ns()) / sumM : 0;
        double rse =
            marginal[i].ns() > 0 ? marginal[i].seNs() / marginal[i].ns() : Double.POSITIVE_INFINITY;
        boolean resolved = rse <= maxRelSe && mf > 0;
        out.append(
            String.format(
                Locale.ROOT,
                "%5d %4d %7s %6d %7d %11.0f %7.1f%% %8.3f %8.3f %8.3f %8.3f%s%n",
                b,
                i,
                m.prefill() ? "prefill" : "decode",
                m.tokens(),
                m.context(),
                marginal[i].ns(),
                100 * Math.min(rse, 9.99),
                mf,
                frac[0][i],
                frac[1][i],
                frac[2][i],
                resolved ? "" : "  (unresolved)"));
        if (marginal[i].ns() > 0) {
          relSe.add(rse);
        }
        if (resolved) {
          for (int p = 0; p < policies.length; p++) {
            errs.get(p).add(Math.abs(frac[p][i] - mf) / mf);
          }
        }
      }
    }
    int resolved = errs.get(0).size();
    for (int p = 0; p < policies.length; p++) {
      mis[p] /= Math.max(1, misBatches);
    }
    out.append(
        String.format(
            Locale.ROOT,
            "members: %d; resolved (marginal cost's standard error <= %.0f%% of it): %d;"
                + " median relative standard error of a marginal cost: %.1f%%%n"
                + "relative error of the share vs the marginal cost, resolved members:%n"
                + "  default      (%s): mean %.1f%%, p90 %.1f%%%n"
                + "  calibrated   (%s): mean %.1f%%, p90 %.1f%%%n"
                + "  cal. no tc   (%s): mean %.1f%%, p90 %.1f%%%n"
                + "misattributed share of a step's variable time, all members (mean over %d"
                + " batches): default %.1f%%, calibrated %.1f%%, calibrated without tc %.1f%%%n",
            members,
            100 * maxRelSe,
            resolved,
            100 * quantile(relSe, 0.5),
            tokens.describe(),
            100 * mean(errs.get(0)),
            100 * quantile(errs.get(0), 0.9),
            calibrated.describe(),
            100 * mean(errs.get(1)),
            100 * quantile(errs.get(1), 0.9),
            noTc.describe(),
            100 * mean(errs.get(2)),
            100 * quantile(errs.get(2), 0.9),
            misBatches,
            100 * mis[0],
            100 * mis[1],
            100 * mis[2]));
    return new Result(
        out.toString(),
        mean(errs.get(0)),
        quantile(errs.get(0), 0.9),
        mean(errs.get(1)),
        quantile(errs.get(1), 0.9),
        mean(errs.get(2)),
        mis[0],
        mis[1],
        mis[2],
        resolved,
        members,
        fit.r2());
  }

  static double[] fractions(long[] w) {
    double sum = 0;
    for (long x : w) {
      sum += x;
    }
    double[] f = new double[w.length];
    for (int i = 0; i < w.length; i++) {
      f[i] = sum > 0 ? w[i] / sum : 1.0 / w.length;
    }
    return f;
  }

  /**
   * The 20% trimmed mean of {@code samples} and its standard error from the winsorized variance:
   * {@code s_w / ((1 − 2·TRIM)·√n)}.
   */
  static Marginal marginal(long[] samples) {
    long[] s = samples.clone();
    Arrays.sort(s);
    int n = s.length;
    int g = (int) Math.floor(TRIM * n);
    double sum = 0;
    for (int i = g; i < n - g; i++) {
      sum += s[i];
    }
    double trimmed = sum / (n - 2 * g);
    double wMean = 0;
    double[] w = new double[n];
    for (int i = 0; i < n; i++) {
      w[i] = s[Math.min(Math.max(i, g), n - 1 - g)];
      wMean += w[i];
    }
    wMean /= n;
    double var = 0;
    for (double x : w) {
      var += (x - wMean) * (x - wMean);
    }
    var /= Math.max(1, n - 1);
    double se = Math.sqrt(var) / ((1 - 2 * TRIM) * Math.sqrt(n));
    return new Marginal(trimmed, se);
  }

  /** A random batch: 2 to 8 members, decodes first, as the scheduler orders a step. */
  static StepShape sample(Random rnd, int contextLength) {
    int n = 2 + rnd.nextInt(7);
    List<StepShape.Member> decodes = new ArrayList<>();
    List<StepShape.Member> prefills = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      if (rnd.nextDouble() < 0.3) {
        int len = 8 + rnd.nextInt(121);
        int before = rnd.nextInt(Math.max(1, contextLength - len - 8));
        prefills.add(new StepShape.Member(true, len, before + len));
      } else {
        decodes.add(new StepShape.Member(false, 1, 16 + rnd.nextInt(contextLength - 24)));
      }
    }
    decodes.addAll(prefills);
    return new StepShape(decodes);
  }

  /**
   * Paired differences: {@code d[i][r]} is, in round {@code r}, the time of the whole batch minus
   * the time of the batch without member {@code i}, the two timed back to back in a random order.
   */
  static long[][] measurePaired(
      LanguageModel model, StepTimer timer, StepShape batch, int repeats, Random rnd) {
    ModelConfig c = model.config();
    int n = batch.members().size();
    StepShape[] without = new StepShape[n];
    for (int i = 0; i < n; i++) {
      without[i] = batch.without(i);
    }
    long[][] diffs = new long[n][repeats];
    StepBatch sb = new StepBatch(batch.prefillTokens() + batch.decodes(), n);
    float[][] logits = new float[n][c.vocabSize()];
    List<Integer> order = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      order.add(i);
    }
    try (KvCache cache = model.newCache(n)) {
      for (int r = 0; r < repeats; r++) {
        Collections.shuffle(order, rnd);
        for (int i : order) {
          boolean fullFirst = rnd.nextBoolean();
          long full = 0;
          long rest = 0;
          for (int k = 0; k < 2; k++) {
            boolean runFull = (k == 0) == fullFirst;
            (runFull ? batch : without[i]).fill(sb, c.vocabSize(), c.contextLength());
            long t = Calibration.time(model, timer, sb, cache, logits);
            if (runFull) {
              full = t;
            } else {
              rest = t;
            }
          }
          diffs[i][r] = full - rest;
        }
      }
    }
    return diffs;
  }

  static long[] weights(StepShape s, WeightPolicy p) {
    long[] w = new long[s.members().size()];
    for (int i = 0; i < w.length; i++) {
      StepShape.Member m = s.members().get(i);
      w[i] = p.weight(m.prefill(), m.tokens(), m.context());
    }
    return w;
  }

  static double mean(List<Double> xs) {
    return xs.stream().mapToDouble(Double::doubleValue).average().orElse(Double.NaN);
  }

  static double quantile(List<Double> xs, double q) {
    if (xs.isEmpty()) {
      return Double.NaN;
    }
    List<Double> s = new ArrayList<>(xs);
    Collections.sort(s);
    return s.get(Math.min(s.size() - 1, (int) Math.ceil(q * s.size()) - 1));
  }

  static String loadAverage() {
    try {
      return Files.readString(Path.of("/proc/loadavg")).trim();
    } catch (Exception e) {
      return "unknown (" + e.getMessage() + ")";
    }
  }

  private static String arg(String[] args, String name, String dflt) {
    for (int i = 0; i + 1 < args.length; i++) {
      if (args[i].equals(name)) {
        return args[i + 1];
      }
    }
    return dflt;
  }
}
