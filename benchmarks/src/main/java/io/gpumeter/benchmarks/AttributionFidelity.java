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
 * ({@link Calibration}, the {@code calibrate} command's design and fit). Then {@code --batches}
 * batches are sampled at random (2 to 8 members; each a decode at a random context, or a prompt
 * chunk of 8 to 128 tokens at a random earlier context): none of them is a calibration point. For
 * each batch, the batch and each batch-without-one-member are timed {@code --repeats} times,
 * interleaved (every repeat runs all of them in a fresh shuffled order, so machine load falls on
 * all alike), and each is summarised by its median. A member's marginal cost is the batch's median
 * minus its batch-without-it's median.
 *
 * <p><b>Error.</b> The fixed cost of a step is in every batch-without-one too, so marginal costs
 * never see it. So shares are compared as fractions of the step, each against the member's fraction
 * of the batch's marginal costs: {@code err_i = |w_i/Σw − m_i/Σm| / (m_i/Σm)}. Mean and p90 over
 * all members, for the default policy (tokens) and the calibrated one.
 *
 * <p><b>Noise.</b> Each marginal cost is computed again from the odd and from the even repeats
 * alone; the median of {@code |m_odd − m_even| / m} is reported as the noise of a marginal cost.
 * Where it is larger than the error, the error is not resolved. The load average is printed at the
 * start and the end.
 *
 * <p>{@code --timer thread-cpu} ({@link ThreadCpuStepTimer}) times steps by the scheduler thread's
 * CPU time, for a CPU shared with other work, where the wall clock mostly measures the wait for a
 * core. Run: {@code java -cp <benchmarks classpath> io.gpumeter.benchmarks.AttributionFidelity
 * [--models-dir models] [--device cpu] [--batches 16] [--repeats 21] [--calib-repeats 7] [--seed
 * 18]}
 */
public final class AttributionFidelity {
  private AttributionFidelity() {}

  public static void main(String[] args) throws Exception {
    Path modelsDir = Path.of(arg(args, "--models-dir", "models"));
    String device = arg(args, "--device", "cpu");
    int batches = Integer.parseInt(arg(args, "--batches", "16"));
    int repeats = Integer.parseInt(arg(args, "--repeats", "21"));
    int calibRepeats = Integer.parseInt(arg(args, "--calib-repeats", "7"));
    long seed = Long.parseLong(arg(args, "--seed", "18"));
    String timerKind = arg(args, "--timer", "device");
    if (!timerKind.equals("device") && !timerKind.equals("thread-cpu")) {
      throw new IllegalArgumentException("--timer is device or thread-cpu, was " + timerKind);
    }
    System.out.printf(
        Locale.ROOT,
        "attribution fidelity: device=%s timer=%s batches=%d repeats=%d calib-repeats=%d"
            + " seed=%d%n",
        device,
        timerKind,
        batches,
        repeats,
        calibRepeats,
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
      Result r = run(served.model(), timer, batches, repeats, calibRepeats, seed);
      System.out.print(r.text());
      System.out.printf(
          Locale.ROOT,
          "RESULT check=attribution status=OK device=%s default_mean_pct=%.1f default_p90_pct=%.1f"
              + " calibrated_mean_pct=%.1f calibrated_p90_pct=%.1f noise_pct=%.1f members=%d"
              + " r2=%.4f%n",
          served.timer().info().device(),
          100 * r.defaultMean(),
          100 * r.defaultP90(),
          100 * r.calibratedMean(),
          100 * r.calibratedP90(),
          100 * r.noise(),
          r.members(),
          r.r2());
    }
    System.out.println("load average at end: " + loadAverage());
  }

  /** The figures of one run. */
  public record Result(
      String text,
      double defaultMean,
      double defaultP90,
      double calibratedMean,
      double calibratedP90,
      double noise,
      int members,
      double r2) {}

  /** Calibrates, samples batches, measures and compares; see the class comment. */
  public static Result run(
      LanguageModel model, StepTimer timer, int batches, int repeats, int calibRepeats, long seed) {
    ModelConfig c = model.config();
    StringBuilder out = new StringBuilder();
    Calibration.Fit fit =
        Calibration.fit(
            Calibration.measure(
                model, timer, Calibration.design(c.contextLength()), calibRepeats, seed));
    out.append(fit.report());
    LinearWeightPolicy calibrated = fit.policy();
    WeightPolicy tokens = WeightPolicy.tokens();
    out.append("default policy:    ").append(tokens.describe()).append('\n');
    out.append("calibrated policy: ").append(calibrated.describe()).append('\n');

    Random rnd = new Random(seed);
    List<Double> errDefault = new ArrayList<>();
    List<Double> errCalibrated = new ArrayList<>();
    List<Double> noise = new ArrayList<>();
    int nonPositive = 0;
    // Misattributed time: sum over members of |policy fraction - marginal fraction|, halved (what
    // one member gets too much another gets too little), over all batches: the share of the steps'
    // variable time that went to the wrong request.
    double misDefault = 0;
    double misCalibrated = 0;
    int misBatches = 0;
    out.append(
        String.format(
            Locale.ROOT,
            "%5s %4s %7s %8s %9s %12s %9s %9s %9s%n",
            "batch",
            "mem",
            "kind",
            "tokens",
            "context",
            "marginal_ns",
            "m_frac",
            "dflt_frac",
            "cal_frac"));
    for (int b = 0; b < batches; b++) {
      StepShape batch = sample(rnd, c.contextLength());
      int n = batch.members().size();
      long[][] samples = measure(model, timer, batch, repeats, rnd);
      double[] marginal = new double[n];
      double[] halfA = new double[n];
      double[] halfB = new double[n];
      for (int i = 0; i < n; i++) {
        marginal[i] = median(samples[0], 0, 1) - median(samples[i + 1], 0, 1);
        halfA[i] = median(samples[0], 0, 2) - median(samples[i + 1], 0, 2);
        halfB[i] = median(samples[0], 1, 2) - median(samples[i + 1], 1, 2);
      }
      double sumM = Arrays.stream(marginal).sum();
      long[] wd = weights(batch, tokens);
      long[] wc = weights(batch, calibrated);
      double sumWd = Arrays.stream(wd).sum();
      double sumWc = Arrays.stream(wc).sum();
      if (sumM > 0) {
        double md = 0;
        double mc = 0;
        for (int i = 0; i < n; i++) {
          md += Math.abs(wd[i] / sumWd - marginal[i] / sumM);
          mc += Math.abs(wc[i] / sumWc - marginal[i] / sumM);
        }
        misDefault += md / 2;
        misCalibrated += mc / 2;
        misBatches++;
      }
      for (int i = 0; i < n; i++) {
        StepShape.Member m = batch.members().get(i);
        double mf = marginal[i] / sumM;
        double df = wd[i] / sumWd;
        double cf = wc[i] / sumWc;
        out.append(
            String.format(
                Locale.ROOT,
                "%5d %4d %7s %8d %9d %12.0f %9.3f %9.3f %9.3f%n",
                b,
                i,
                m.prefill() ? "prefill" : "decode",
                m.tokens(),
                m.context(),
                marginal[i],
                mf,
                df,
                cf));
        if (marginal[i] <= 0 || sumM <= 0) {
          nonPositive++; // unresolvable under this noise: its error would be infinite
          continue;
        }
        errDefault.add(Math.abs(df - mf) / mf);
        errCalibrated.add(Math.abs(cf - mf) / mf);
        noise.add(Math.abs(halfA[i] - halfB[i]) / marginal[i]);
      }
    }
    double dMean = mean(errDefault);
    double dP90 = quantile(errDefault, 0.9);
    double cMean = mean(errCalibrated);
    double cP90 = quantile(errCalibrated, 0.9);
    double nMed = quantile(noise, 0.5);
    out.append(
        String.format(
            Locale.ROOT,
            "members compared: %d (%d more had a marginal cost <= 0 under the noise and are left"
                + " out)%n"
                + "relative error of the share vs the marginal cost:%n"
                + "  default    (%s): mean %.1f%%, p90 %.1f%%%n"
                + "  calibrated (%s): mean %.1f%%, p90 %.1f%%%n"
                + "noise of a marginal cost (median |odd-half - even-half| / marginal): %.1f%%%n"
                + "misattributed share of a step's variable time (mean over batches):"
                + " default %.1f%%, calibrated %.1f%%%n",
            errDefault.size(),
            nonPositive,
            tokens.describe(),
            100 * dMean,
            100 * dP90,
            calibrated.describe(),
            100 * cMean,
            100 * cP90,
            100 * nMed,
            100 * misDefault / Math.max(1, misBatches),
            100 * misCalibrated / Math.max(1, misBatches)));
    return new Result(out.toString(), dMean, dP90, cMean, cP90, nMed, errDefault.size(), fit.r2());
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
   * Times the batch (row 0) and each batch-without-member-i (row i+1), {@code repeats} times each,
   * every repeat in a fresh shuffled order.
   */
  static long[][] measure(
      LanguageModel model, StepTimer timer, StepShape batch, int repeats, Random rnd) {
    ModelConfig c = model.config();
    int n = batch.members().size();
    List<StepShape> shapes = new ArrayList<>();
    shapes.add(batch);
    for (int i = 0; i < n; i++) {
      shapes.add(batch.without(i));
    }
    long[][] samples = new long[shapes.size()][repeats];
    StepBatch sb = new StepBatch(batch.prefillTokens() + batch.decodes(), n);
    float[][] logits = new float[n][c.vocabSize()];
    List<Integer> order = new ArrayList<>();
    for (int i = 0; i < shapes.size(); i++) {
      order.add(i);
    }
    try (KvCache cache = model.newCache(n)) {
      for (int r = 0; r < repeats; r++) {
        Collections.shuffle(order, rnd);
        for (int i : order) {
          shapes.get(i).fill(sb, c.vocabSize(), c.contextLength());
          samples[i][r] = Calibration.time(model, timer, sb, cache, logits);
        }
      }
    }
    return samples;
  }

  static long[] weights(StepShape s, WeightPolicy p) {
    long[] w = new long[s.members().size()];
    for (int i = 0; i < w.length; i++) {
      StepShape.Member m = s.members().get(i);
      w[i] = p.weight(m.prefill(), m.tokens(), m.context());
    }
    return w;
  }

  /** Median of {@code v[from], v[from+step], ...}. */
  static double median(long[] v, int from, int step) {
    List<Long> xs = new ArrayList<>();
    for (int i = from; i < v.length; i += step) {
      xs.add(v[i]);
    }
    Collections.sort(xs);
    int k = xs.size();
    return k % 2 == 1 ? xs.get(k / 2) : (xs.get(k / 2 - 1) + xs.get(k / 2)) / 2.0;
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
