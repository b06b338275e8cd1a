package io.gpumeter.benchmarks;

import io.gpumeter.metering.StepTimerFactory;
import io.gpumeter.model.LanguageModel;
import io.gpumeter.model.ModelStore;
import io.gpumeter.model.ServedModel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.Locale;

/**
 * Decode tokens per second of every model of a models directory through {@link ModelStore} and DJL
 * (the server's path to the model, without HTTP or scheduler), on a chosen device: for each batch
 * size, {@link Direct}'s loop (one packed prefill step of the batch's prompts, then {@code
 * max-tokens - 1} decode steps, argmax on the host), one warm-up round, then whole rounds for
 * {@code slice-s} seconds. The DJL side of tools/gpu-check's check 8 (a bf16 Llama shape on CUDA,
 * against PyTorch eager in {@code llama_shape.py}); prints one {@code RESULT} line per (model,
 * batch) for its table.
 *
 * <pre>{@code
 * java -cp benchmarks/target/benchmarks.jar io.gpumeter.benchmarks.ModelDecode --models DIR \
 *     [--device cpu|cuda:0] [--batches 1,32] [--max-tokens 32] [--slice-s 5]
 * }</pre>
 */
public final class ModelDecode {
  private ModelDecode() {}

  public static void main(String[] args) throws Exception {
    String models = "models";
    String device = "auto";
    int[] batches = {1, 32};
    int maxTokens = 32;
    double sliceS = 5;
    for (int i = 0; i + 1 < args.length; i += 2) {
      switch (args[i]) {
        case "--models" -> models = args[i + 1];
        case "--device" -> device = args[i + 1];
        case "--batches" ->
            batches = Arrays.stream(args[i + 1].split(",")).mapToInt(Integer::parseInt).toArray();
        case "--max-tokens" -> maxTokens = Integer.parseInt(args[i + 1]);
        case "--slice-s" -> sliceS = Double.parseDouble(args[i + 1]);
        default -> throw new IllegalArgumentException("unknown option " + args[i]);
      }
    }
    if (maxTokens < 1 || sliceS <= 0) {
      throw new IllegalArgumentException("--max-tokens must be >= 1 and --slice-s > 0");
    }
    Duration slice = Duration.ofNanos((long) (sliceS * 1e9));
    try (ModelStore store = ModelStore.open(Path.of(models), device, StepTimerFactory.hostOnly())) {
      for (ServedModel served : store.models()) {
        LanguageModel model = served.model();
        for (int b : batches) {
          try (Direct direct = new Direct(model, b, maxTokens)) {
            direct.run(Duration.ZERO); // one round: first calls at this batch size
            long[] run = direct.run(slice);
            System.out.printf(
                Locale.ROOT,
                "RESULT check=llama-djl status=OK model=%s dtype=%s device=%s batch=%d"
                    + " djl_tok_s=%.1f tokens=%d%n",
                model.config().name(),
                model.config().dtype(),
                model.device(),
                b,
                run[0] * 1e9 / run[1],
                run[0]);
          }
        }
      }
    }
    System.exit(0);
  }
}
