package io.gpumeter.benchmarks;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.engine.Engine;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.engine.PtNDManager;
import ai.djl.pytorch.engine.PtSymbolBlock;
import ai.djl.pytorch.jni.IValue;
import ai.djl.pytorch.jni.IValueUtils;
import ai.djl.pytorch.jni.JniUtils;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.file.Path;
import java.time.Instant;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * One decode step's attention for one layer, formulated several ways, timed through DJL's libtorch
 * (issue 13 item 6): the module that {@code tools/hf_export/attention_variants.py} writes (see its
 * docstring for the variants). Each call attends {@code --iters} times, each time over a different
 * slot of {@code --slots} slots of a {@code [S, C, Hkv, Dh]} key and value cache, so the keys and
 * values come from memory, not from the cache of a previous call, as in a decode step. Rounds run
 * every (variant, context) pair in turn; the figure is the calling thread's CPU time per attention
 * (one intra-op thread), median and minimum over {@code --rounds} rounds after one warm-up round,
 * and its ratio to {@code read_floor} (a streaming read of the same keys and values).
 *
 * <pre>{@code
 * (cd tools && python3 -m hf_export.attention_variants /tmp/av --sdpa)
 * java -cp benchmarks/target/benchmarks.jar io.gpumeter.benchmarks.AttentionVariants \
 *     --file /tmp/av/variants.pt [--kv-heads 4] [--group 2] [--head-dim 32] \
 *     [--contexts 512,2000] [--slots 24] [--iters 48] [--rounds 7] \
 *     [--variants committed,qk_blockdiag,av_bag,hybrid,read_floor,sdpa]
 * }</pre>
 */
public final class AttentionVariants {
  private static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();

  private AttentionVariants() {}

  public static void main(String[] args) throws Exception {
    Path file = Path.of("/tmp/av/variants.pt");
    int kvHeads = 4;
    int group = 2;
    int headDim = 32;
    int[] contexts = {512, 2000};
    int slots = 24;
    int iters = 48;
    int rounds = 7;
    List<String> variants =
        List.of("committed", "qk_blockdiag", "av_bag", "hybrid", "read_floor", "sdpa");
    for (int i = 0; i + 1 < args.length; i += 2) {
      String v = args[i + 1];
      switch (args[i]) {
        case "--file" -> file = Path.of(v);
        case "--kv-heads" -> kvHeads = Integer.parseInt(v);
        case "--group" -> group = Integer.parseInt(v);
        case "--head-dim" -> headDim = Integer.parseInt(v);
        case "--contexts" ->
            contexts = Arrays.stream(v.split(",")).mapToInt(Integer::parseInt).toArray();
        case "--slots" -> slots = Integer.parseInt(v);
        case "--iters" -> iters = Integer.parseInt(v);
        case "--rounds" -> rounds = Integer.parseInt(v);
        case "--variants" -> variants = List.of(v.split(","));
        default -> throw new IllegalArgumentException("unknown option " + args[i]);
      }
    }
    int capacity = Arrays.stream(contexts).max().orElse(1);
    Engine.getEngine("PyTorch");
    JniUtils.setGraphExecutorOptimize(false);
    JniUtils.setNumThreads(1);
    System.out.printf(
        Locale.ROOT,
        "AttentionVariants: %s, %d cores, Hkv %d, R %d, Dh %d, %d slots of %d positions, %d"
            + " attentions per call, %d rounds%n",
        Instant.now(),
        Runtime.getRuntime().availableProcessors(),
        kvHeads,
        group,
        headDim,
        slots,
        capacity,
        iters,
        rounds);
    try (Model model = Model.newInstance("attention-variants", Device.cpu(), "PyTorch")) {
      model.load(file.getParent(), file.getFileName().toString());
      PtSymbolBlock block = (PtSymbolBlock) model.getBlock();
      PtNDManager m = (PtNDManager) model.getNDManager();
      PtNDArray q = (PtNDArray) m.randomNormal(new Shape(kvHeads, group, headDim));
      PtNDArray k = (PtNDArray) m.randomNormal(new Shape(slots, capacity, kvHeads, headDim));
      PtNDArray v = (PtNDArray) m.randomNormal(new Shape(slots, capacity, kvHeads, headDim));
      double[][][] us = new double[variants.size()][contexts.length][rounds];
      for (int r = -1; r < rounds; r++) {
        for (int a = 0; a < variants.size(); a++) {
          for (int c = 0; c < contexts.length; c++) {
            IValue[] in = {
              IValue.from(variants.get(a)),
              IValue.from(q),
              IValue.from(k),
              IValue.from(v),
              IValue.from((long) contexts[c]),
              IValue.from((long) iters)
            };
            long start = THREADS.getCurrentThreadCpuTime();
            IValue out = IValueUtils.runMethod(block, "run", in);
            long cpu = THREADS.getCurrentThreadCpuTime() - start;
            out.close();
            for (IValue x : in) {
              x.close();
            }
            if (r >= 0) {
              us[a][c][r] = cpu / 1e3 / iters;
            }
          }
        }
      }
      int floor = variants.indexOf("read_floor");
      System.out.println(
          "| variant | context | CPU µs per attention, median (min) | vs read_floor (medians) |");
      System.out.println("|---|---|---|---|");
      for (int a = 0; a < variants.size(); a++) {
        for (int c = 0; c < contexts.length; c++) {
          double[] x = us[a][c];
          Arrays.sort(x);
          double ratio = Double.NaN;
          if (floor >= 0) {
            double[] f = us[floor][c].clone();
            Arrays.sort(f);
            ratio = x[x.length / 2] / f[f.length / 2];
          }
          System.out.printf(
              Locale.ROOT,
              "| %s | %d | %.1f (%.1f) | %.2f |%n",
              variants.get(a),
              contexts[c],
              x[x.length / 2],
              x[0],
              ratio);
        }
      }
    }
    System.exit(0);
  }
}
