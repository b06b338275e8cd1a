package io.gpumeter.benchmarks;

import io.gpumeter.model.KvCache;
import io.gpumeter.model.LanguageModel;
import io.gpumeter.model.StepBatch;
import java.time.Duration;
import java.util.Arrays;

/**
 * {@link ServerThroughput}'s direct part: the bare model at batch {@code b}, with its own KV cache
 * and buffers, used only from the model thread. One round: a packed prefill step for all prompts,
 * then {@code maxTokens - 1} decode steps.
 */
final class Direct implements AutoCloseable {
  private final LanguageModel model;
  private final int b;
  private final int maxTokens;
  private final int[][] prompts;
  private final int[][] seq;
  private final float[][] logits;
  private final StepBatch batch;
  private final KvCache cache;

  Direct(LanguageModel model, int b, int maxTokens) {
    this.model = model;
    this.b = b;
    this.maxTokens = maxTokens;
    prompts = new int[b][];
    seq = new int[b][];
    for (int s = 0; s < b; s++) {
      String prompt = ServerThroughput.PROMPTS[s % ServerThroughput.PROMPTS.length];
      prompts[s] = model.tokenizer().encode(prompt);
      seq[s] = Arrays.copyOf(prompts[s], prompts[s].length + maxTokens);
    }
    logits = new float[b][model.config().vocabSize()];
    batch = new StepBatch(b * 32, b);
    cache = model.newCache(b);
  }

  /** Runs whole rounds for at least {@code len}; returns {tokens, nanoseconds}. */
  long[] run(Duration len) {
    long tokens = 0;
    long start = System.nanoTime();
    long end = start + len.toNanos();
    long now;
    do {
      tokens += round();
      now = System.nanoTime();
    } while (now < end);
    return new long[] {tokens, now - start};
  }

  private int round() {
    int vocab = model.config().vocabSize();
    batch.clear();
    for (int s = 0; s < b; s++) {
      batch.addSequence(s, prompts[s], 0, prompts[s].length, 0);
    }
    model.step(batch, cache, logits);
    for (int s = 0; s < b; s++) {
      seq[s][prompts[s].length] = ServerThroughput.argmax(logits[s], vocab);
    }
    for (int t = 1; t < maxTokens; t++) {
      batch.clear();
      for (int s = 0; s < b; s++) {
        int pos = prompts[s].length + t - 1; // the token generated last, not yet in the cache
        batch.addSequence(s, seq[s], pos, 1, pos);
      }
      model.step(batch, cache, logits);
      for (int s = 0; s < b; s++) {
        seq[s][prompts[s].length + t] = ServerThroughput.argmax(logits[s], vocab);
      }
    }
    return b * maxTokens;
  }

  @Override
  public void close() {
    cache.close();
  }
}
