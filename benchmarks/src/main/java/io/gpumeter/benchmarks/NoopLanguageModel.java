package io.gpumeter.benchmarks;

import io.gpumeter.model.ByteTokenizer;
import io.gpumeter.model.KvCache;
import io.gpumeter.model.LanguageModel;
import io.gpumeter.model.ModelConfig;
import io.gpumeter.model.StepBatch;
import io.gpumeter.model.Tokenizer;
import java.nio.file.Path;

/**
 * A model that does nothing, behind the real {@link LanguageModel} interface, so a benchmark sees
 * only the scheduler's own cost.
 *
 * <p>Shaped like the demo byte model (257 logits, end-of-sequence 256) so sampling scans a
 * realistic row, but {@link #step} returns at once and writes nothing: the scheduler's logits rows
 * stay all zero, and greedy sampling picks token 0, never end-of-sequence. Its context length is
 * {@link Integer#MAX_VALUE}, so a generation runs until its {@code maxTokens}.
 */
public final class NoopLanguageModel implements LanguageModel {
  static final int VOCAB = 257;
  static final int EOS = 256;

  private final ModelConfig config =
      new ModelConfig(
          "noop",
          Path.of("noop"),
          "none",
          "byte",
          VOCAB,
          Integer.MAX_VALUE,
          EOS,
          "float32",
          1,
          1,
          1);
  private final Tokenizer tokenizer = new ByteTokenizer(VOCAB);

  @Override
  public ModelConfig config() {
    return config;
  }

  @Override
  public Tokenizer tokenizer() {
    return tokenizer;
  }

  @Override
  public String device() {
    return "cpu";
  }

  @Override
  public KvCache newCache(int slots) {
    return new KvCache() {
      @Override
      public int slots() {
        return slots;
      }

      @Override
      public long bytes() {
        return 0;
      }

      @Override
      public void close() {}
    };
  }

  @Override
  public void step(StepBatch batch, KvCache cache, float[][] logits) {
    // nothing: see the class comment
  }

  @Override
  public void copyPrefix(KvCache cache, int fromSlot, int toSlot, int positions) {
    // nothing: the cache holds no keys or values (see the class comment)
  }

  @Override
  public float[] forwardLast(int[] tokens) {
    return new float[VOCAB];
  }

  @Override
  public void close() {}
}
