package io.gpumeter.benchmarks;

import io.gpumeter.metering.StepTimerFactory;
import io.gpumeter.model.KvCache;
import io.gpumeter.model.LanguageModel;
import io.gpumeter.model.ModelStore;
import io.gpumeter.model.StepBatch;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * Decode time per token at batch 1 against the context length, for every model of a models
 * directory side by side (issue 13 item 6: a model exported before and after a change of its {@code
 * step}, in one JVM).
 *
 * <p>For each model and each context length {@code c} (that leaves room for the decode steps in the
 * model's context): prefill {@code c} tokens in chunks of 128, as the scheduler does, then time 32
 * decode steps (argmax on the host). One round runs every (model, context) pair once, in turn, so
 * that drifting load on the machine hits all of them alike; after 2 warm-up rounds, the median of
 * {@code --rounds} rounds per pair, and each context's ratio to the shortest one.
 *
 * <p>Each round is timed twice: by the wall clock, and by the calling thread's CPU time, which
 * leaves out the time other processes hold the cores (on a shared machine the wall clock mostly
 * measures the load). The thread's CPU time is the model's whole work only with one intra-op thread
 * ({@code -Dai.djl.pytorch.num_threads=1}, as the command below sets). The slowest single decode
 * step of each pair is printed beside its CPU time: a stall whose CPU time is small was time spent
 * waiting for a core, not work of the step.
 *
 * <pre>{@code
 * java -Dai.djl.pytorch.num_threads=1 -cp benchmarks/target/benchmarks.jar \
 *     io.gpumeter.benchmarks.ContextDecode \
 *     --models DIR [--contexts 32,512,2048] [--rounds 15]
 * }</pre>
 */
public final class ContextDecode {
  private static final int DECODE_STEPS = 32;
  private static final int CHUNK = 128;
  private static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();

  private ContextDecode() {}

  public static void main(String[] args) throws Exception {
    String models = "models";
    int[] contexts = {32, 512, 2048};
    int rounds = 15;
    for (int i = 0; i + 1 < args.length; i += 2) {
      switch (args[i]) {
        case "--models" -> models = args[i + 1];
        case "--contexts" ->
            contexts = Arrays.stream(args[i + 1].split(",")).mapToInt(Integer::parseInt).toArray();
        case "--rounds" -> rounds = Integer.parseInt(args[i + 1]);
        default -> throw new IllegalArgumentException("unknown option " + args[i]);
      }
    }
    System.out.printf(
        Locale.ROOT,
        "ContextDecode: %s, %d cores, models %s, contexts %s, %d rounds%n",
        Instant.now(),
        Runtime.getRuntime().availableProcessors(),
        models,
        Arrays.toString(contexts),
        rounds);
    try (ModelStore store =
        ModelStore.open(java.nio.file.Path.of(models), "cpu", StepTimerFactory.hostOnly())) {
      List<LanguageModel> list = new ArrayList<>();
      store.models().forEach(m -> list.add(m.model()));
      list.sort((a, b) -> a.config().name().compareTo(b.config().name()));
      double[][][] wall = new double[list.size()][contexts.length][rounds];
      double[][][] cpu = new double[list.size()][contexts.length][rounds];
      Timing[][] worst = new Timing[list.size()][contexts.length];
      for (int r = -2; r < rounds; r++) {
        for (int m = 0; m < list.size(); m++) {
          for (int c = 0; c < contexts.length; c++) {
            if (fits(list.get(m), contexts[c])) {
              Timing t = decode(list.get(m), contexts[c]);
              if (r >= 0) {
                wall[m][c][r] = t.wallNs / (double) DECODE_STEPS;
                cpu[m][c][r] = t.cpuNs / (double) DECODE_STEPS;
                Timing w = worst[m][c];
                if (w == null || t.maxStepWallNs > w.maxStepWallNs) {
                  worst[m][c] = t;
                }
              }
            }
          }
        }
      }
      System.out.println(
          "| model | context | wall ms/token median (min, max) | vs shortest |"
              + " CPU ms/token median (min, max) | vs shortest | slowest step: wall / CPU ms |");
      System.out.println("|---|---|---|---|---|---|---|");
      for (int m = 0; m < list.size(); m++) {
        double wallBase = Double.NaN;
        double cpuBase = Double.NaN;
        for (int c = 0; c < contexts.length; c++) {
          if (!fits(list.get(m), contexts[c])) {
            continue;
          }
          double[] w = wall[m][c];
          double[] u = cpu[m][c];
          Arrays.sort(w);
          Arrays.sort(u);
          double wallMedian = w[w.length / 2];
          double cpuMedian = u[u.length / 2];
          if (Double.isNaN(wallBase)) {
            wallBase = wallMedian;
            cpuBase = cpuMedian;
          }
          System.out.printf(
              Locale.ROOT,
              "| %s | %d | %.3f (%.3f, %.3f) | %.2f | %.3f (%.3f, %.3f) | %.2f | %.1f / %.1f |%n",
              list.get(m).config().name(),
              contexts[c],
              wallMedian / 1e6,
              w[0] / 1e6,
              w[w.length - 1] / 1e6,
              wallMedian / wallBase,
              cpuMedian / 1e6,
              u[0] / 1e6,
              u[u.length - 1] / 1e6,
              cpuMedian / cpuBase,
              worst[m][c].maxStepWallNs / 1e6,
              worst[m][c].maxStepCpuNs / 1e6);
        }
      }
    }
    System.exit(0);
  }

  private static boolean fits(LanguageModel model, int context) {
    return context + DECODE_STEPS < model.config().contextLength();
  }

  /**
   * The 32 decode steps of one (model, context) pair: their total wall and thread CPU time, and the
   * slowest step's.
   */
  record Timing(long wallNs, long cpuNs, long maxStepWallNs, long maxStepCpuNs) {}

  /** Prefills {@code context} tokens in slot 0, then times 32 decode steps. */
  static Timing decode(LanguageModel model, int context) {
    int vocab = model.config().vocabSize();
    int[] ids = new int[context + DECODE_STEPS + 1];
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
      long wall = 0;
      long cpu = 0;
      long maxWall = -1;
      long maxCpu = 0;
      for (int t = 0; t < DECODE_STEPS; t++) {
        int pos = context + t;
        long cpuStart = THREADS.getCurrentThreadCpuTime();
        long start = System.nanoTime();
        batch.clear();
        batch.addSequence(0, ids, pos, 1, pos);
        model.step(batch, cache, logits);
        ids[pos + 1] = ServerThroughput.argmax(logits[0], vocab);
        long stepWall = System.nanoTime() - start;
        long stepCpu = THREADS.getCurrentThreadCpuTime() - cpuStart;
        wall += stepWall;
        cpu += stepCpu;
        if (stepWall > maxWall) {
          maxWall = stepWall;
          maxCpu = stepCpu;
        }
      }
      return new Timing(wall, cpu, maxWall, maxCpu);
    }
  }
}
