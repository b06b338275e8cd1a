package io.gpumeter.benchmarks;

import ai.djl.pytorch.jni.JniUtils;
import io.gpumeter.metering.StepTimerFactory;
import io.gpumeter.model.KvCache;
import io.gpumeter.model.LanguageModel;
import io.gpumeter.model.ModelStore;
import io.gpumeter.model.StepBatch;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Where a decode step's time goes, per libtorch operator, against the context length: the operator
 * table of libtorch's own profiler (through DJL, so the libtorch 2.7.1 and MKL that the server
 * runs, not the python exporter's torch 1.13), for every model of a models directory (issue 13 item
 * 6).
 *
 * <p>For each model and context {@code c}: prefill {@code c} tokens in chunks of 128 (as {@link
 * ContextDecode}), 8 decode steps unprofiled, then 16 decode steps under {@code
 * JniUtils.startProfile}. The trace (one event per operator call, nested) gives each call's self
 * time (its duration less its children's). Every decode step runs the same sequence of calls, so
 * call {@code j} of the step is taken at its <b>minimum</b> over the 16 steps: a call that the
 * thread spent waiting for a core (a shared machine) or that a page fault stretched is left out,
 * and what remains is the step's own work. The table sums those minimums per operator name, in
 * microseconds per step; the last line also gives the median step's total for comparison.
 *
 * <pre>{@code
 * java -Dai.djl.pytorch.num_threads=1 -Dgpumeter.log.level=WARN \
 *     -cp benchmarks/target/benchmarks.jar io.gpumeter.benchmarks.StepProfile \
 *     --models DIR [--contexts 32,512,2000] [--rows 14]
 * }</pre>
 */
public final class StepProfile {
  private static final int CHUNK = 128;
  private static final int WARM_STEPS = 8;
  private static final int PROFILED_STEPS = 16;
  private static final Pattern EVENT =
      Pattern.compile(
          "\"name\":\\s*\"([^\"]*)\",\\s*\"ph\":\\s*\"X\",\\s*\"ts\":\\s*([0-9.]+),"
              + "\\s*\"dur\":\\s*([0-9.]+)");

  private StepProfile() {}

  public static void main(String[] args) throws Exception {
    String models = "models";
    int[] contexts = {32, 512, 2000};
    int rows = 14;
    for (int i = 0; i + 1 < args.length; i += 2) {
      switch (args[i]) {
        case "--models" -> models = args[i + 1];
        case "--contexts" ->
            contexts = Arrays.stream(args[i + 1].split(",")).mapToInt(Integer::parseInt).toArray();
        case "--rows" -> rows = Integer.parseInt(args[i + 1]);
        default -> throw new IllegalArgumentException("unknown option " + args[i]);
      }
    }
    System.out.printf(
        Locale.ROOT,
        "StepProfile: %s, %d cores, models %s, contexts %s%n",
        Instant.now(),
        Runtime.getRuntime().availableProcessors(),
        models,
        Arrays.toString(contexts));
    Path dir = Files.createTempDirectory("step-profile");
    try (ModelStore store = ModelStore.open(Path.of(models), "cpu", StepTimerFactory.hostOnly())) {
      List<LanguageModel> list = new ArrayList<>();
      store.models().forEach(m -> list.add(m.model()));
      list.sort(Comparator.comparing(m -> m.config().name()));
      for (LanguageModel model : list) {
        List<Integer> used = new ArrayList<>();
        List<Profile> profiles = new ArrayList<>();
        for (int c : contexts) {
          if (c + WARM_STEPS + PROFILED_STEPS < model.config().contextLength()) {
            Path trace = dir.resolve(model.config().name() + "-" + c + ".json");
            profile(model, c, trace);
            used.add(c);
            profiles.add(Profile.parse(Files.readString(trace), PROFILED_STEPS));
            Files.delete(trace);
          }
        }
        print(model.config().name(), used, profiles, rows);
      }
    } finally {
      Files.deleteIfExists(dir);
    }
    System.exit(0);
  }

  /** Prefills {@code context} tokens in slot 0, warms up, then profiles 16 decode steps. */
  static void profile(LanguageModel model, int context, Path trace) {
    int vocab = model.config().vocabSize();
    int steps = WARM_STEPS + PROFILED_STEPS;
    int[] ids = new int[context + steps + 1];
    int[] text = model.tokenizer().encode("The quick brown fox jumps over the lazy dog. ");
    for (int i = 0; i < context; i++) {
      ids[i] = text[i % text.length];
    }
    float[][] logits = new float[1][vocab];
    StepBatch batch = new StepBatch(CHUNK, 1);
    try (KvCache cache = model.newCache(1)) {
      for (int at = 0; at < context; at += CHUNK) {
        batch.clear();
        batch.addSequence(0, ids, at, Math.min(CHUNK, context - at), at);
        model.step(batch, cache, logits);
      }
      ids[context] = ServerThroughput.argmax(logits[0], vocab);
      for (int t = 0; t < steps; t++) {
        if (t == WARM_STEPS) {
          JniUtils.startProfile(false, false, false);
        }
        int pos = context + t;
        batch.clear();
        batch.addSequence(0, ids, pos, 1, pos);
        model.step(batch, cache, logits);
        ids[pos + 1] = ServerThroughput.argmax(logits[0], vocab);
      }
      JniUtils.stopProfile(trace.toString());
    }
  }

  /**
   * Self time per operator, microseconds per step (minimum over the steps of each call), the number
   * of calls per step, and the median step's total self time.
   */
  record Profile(Map<String, double[]> ops, double medianStepUs) {
    /** ops value: {min self µs per step, calls per step}. */
    static Profile parse(String json, int steps) throws IOException {
      List<double[]> spans = new ArrayList<>(); // {ts, dur, index of name}
      List<String> names = new ArrayList<>();
      Matcher m = EVENT.matcher(json);
      while (m.find()) {
        names.add(m.group(1));
        spans.add(
            new double[] {
              Double.parseDouble(m.group(2)), Double.parseDouble(m.group(3)), names.size() - 1
            });
      }
      spans.sort(Comparator.<double[]>comparingDouble(s -> s[0]).thenComparingDouble(s -> -s[1]));
      int n = spans.size();
      if (n == 0 || n % steps != 0) {
        throw new IOException(n + " operator calls in the trace, not a multiple of " + steps);
      }
      double[] self = new double[n];
      int[] stack = new int[n];
      int depth = 0;
      for (int i = 0; i < n; i++) {
        double[] s = spans.get(i);
        self[i] = s[1];
        while (depth > 0 && end(spans.get(stack[depth - 1])) <= s[0] + 1e-9) {
          depth--;
        }
        if (depth > 0) {
          self[stack[depth - 1]] -= s[1];
        }
        stack[depth++] = i;
      }
      int per = n / steps;
      Map<String, double[]> ops = new LinkedHashMap<>();
      for (int j = 0; j < per; j++) {
        String name = names.get((int) spans.get(j)[2]);
        double min = Double.MAX_VALUE;
        for (int s = 0; s < steps; s++) {
          int k = s * per + j;
          if (!names.get((int) spans.get(k)[2]).equals(name)) {
            throw new IOException("decode steps ran different operator sequences at call " + j);
          }
          min = Math.min(min, self[k]);
        }
        double[] acc = ops.computeIfAbsent(name, x -> new double[2]);
        acc[0] += min;
        acc[1] += 1;
      }
      double[] totals = new double[steps];
      for (int s = 0; s < steps; s++) {
        for (int j = 0; j < per; j++) {
          totals[s] += self[s * per + j];
        }
      }
      Arrays.sort(totals);
      return new Profile(ops, totals[steps / 2]);
    }

    private static double end(double[] span) {
      return span[0] + span[1];
    }
  }

  private static void print(
      String model, List<Integer> contexts, List<Profile> profiles, int rows) {
    if (profiles.isEmpty()) {
      return;
    }
    Profile last = profiles.get(profiles.size() - 1);
    List<String> names = new ArrayList<>(last.ops().keySet());
    for (Profile p : profiles) {
      for (String k : p.ops().keySet()) {
        if (!names.contains(k)) {
          names.add(k);
        }
      }
    }
    names.sort(Comparator.comparingDouble(k -> -get(last, k)[0]));
    StringBuilder head = new StringBuilder("| " + model + ": op, self µs/step |");
    StringBuilder rule = new StringBuilder("|---|");
    for (int c : contexts) {
      head.append(" context ").append(c).append(" |");
      rule.append("---|");
    }
    System.out.println(head.append(" calls/step |"));
    System.out.println(rule.append("---|"));
    double[] rest = new double[profiles.size()];
    for (int i = 0; i < names.size(); i++) {
      StringBuilder line = new StringBuilder("| " + names.get(i) + " |");
      for (int p = 0; p < profiles.size(); p++) {
        double us = get(profiles.get(p), names.get(i))[0];
        if (i < rows) {
          line.append(String.format(Locale.ROOT, " %.1f |", us));
        } else {
          rest[p] += us;
        }
      }
      if (i < rows) {
        System.out.println(
            line.append(
                String.format(Locale.ROOT, " %.0f |", get(profiles.get(0), names.get(i))[1])));
      }
    }
    StringBuilder other = new StringBuilder("| (other operators) |");
    StringBuilder total = new StringBuilder("| **total** (median step) |");
    for (int p = 0; p < profiles.size(); p++) {
      other.append(String.format(Locale.ROOT, " %.1f |", rest[p]));
      double sum = 0;
      for (double[] v : profiles.get(p).ops().values()) {
        sum += v[0];
      }
      total.append(
          String.format(Locale.ROOT, " %.1f (%.1f) |", sum, profiles.get(p).medianStepUs()));
    }
    System.out.println(other.append(" |"));
    System.out.println(total.append(" |"));
  }

  private static double[] get(Profile p, String name) {
    return p.ops().getOrDefault(name, new double[2]);
  }
}
