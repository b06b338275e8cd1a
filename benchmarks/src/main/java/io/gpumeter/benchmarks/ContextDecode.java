package io.gpumeter.benchmarks;

import io.gpumeter.metering.StepTimerFactory;
import io.gpumeter.model.KvCache;
import io.gpumeter.model.LanguageModel;
import io.gpumeter.model.ModelStore;
import io.gpumeter.model.StepBatch;
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
 * <pre>{@code
 * java -cp benchmarks/target/benchmarks.jar io.gpumeter.benchmarks.ContextDecode \
 *     --models DIR [--contexts 32,512,2048] [--rounds 15]
 * }</pre>
 */
public final class ContextDecode {
  private static final int DECODE_STEPS = 32;
  private static final int CHUNK = 128;

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
      double[][][] perToken = new double[list.size()][contexts.length][rounds];
      for (int r = -2; r < rounds; r++) {
        for (int m = 0; m < list.size(); m++) {
          for (int c = 0; c < contexts.length; c++) {
            if (fits(list.get(m), contexts[c])) {
              double ns = decodeNanosPerToken(list.get(m), contexts[c]);
              if (r >= 0) {
                perToken[m][c][r] = ns;
              }
            }
          }
        }
      }
      System.out.println("| model | context | ms/token (median) | vs shortest context |");
      System.out.println("|---|---|---|---|");
      for (int m = 0; m < list.size(); m++) {
        double base = Double.NaN;
        for (int c = 0; c < contexts.length; c++) {
          if (!fits(list.get(m), contexts[c])) {
            continue;
          }
          double[] v = perToken[m][c];
          Arrays.sort(v);
          double median = v[v.length / 2];
          if (Double.isNaN(base)) {
            base = median;
          }
          System.out.printf(
              Locale.ROOT,
              "| %s | %d | %.3f (min %.3f, max %.3f) | %.2f |%n",
              list.get(m).config().name(),
              contexts[c],
              median / 1e6,
              v[0] / 1e6,
              v[v.length - 1] / 1e6,
              median / base);
        }
      }
    }
    System.exit(0);
  }

  private static boolean fits(LanguageModel model, int context) {
    return context + DECODE_STEPS < model.config().contextLength();
  }

  /** Prefills {@code context} tokens in slot 0, then returns the mean ns of 32 decode steps. */
  static double decodeNanosPerToken(LanguageModel model, int context) {
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
      long start = System.nanoTime();
      for (int t = 0; t < DECODE_STEPS; t++) {
        int pos = context + t;
        batch.clear();
        batch.addSequence(0, ids, pos, 1, pos);
        model.step(batch, cache, logits);
        ids[pos + 1] = ServerThroughput.argmax(logits[0], vocab);
      }
      return (System.nanoTime() - start) / (double) DECODE_STEPS;
    }
  }
}
