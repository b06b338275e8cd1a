package io.gpumeter.model;

import static io.gpumeter.model.TestModels.argmax;
import static io.gpumeter.model.TestModels.maxAbsDiff;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** The real demo model through DJL on the CPU. */
class DjlLanguageModelTest {
  private static final Logger log = LoggerFactory.getLogger(DjlLanguageModelTest.class);
  private static final float TOLERANCE = 1e-4f;

  private static DjlLanguageModel model;
  private static int vocab;

  @BeforeAll
  static void load() {
    model = TestModels.demo();
    vocab = model.config().vocabSize();
  }

  private static int[] ids(String text) {
    return model.tokenizer().encode(text);
  }

  private static float[][] logits(int rows) {
    return new float[rows][vocab];
  }

  /** Prefills {@code prompt} into {@code slot} in one step and returns its last logits. */
  private static float[] prefill(KvCache cache, int slot, int[] prompt) {
    StepBatch batch = new StepBatch(prompt.length, 1);
    batch.addSequence(slot, prompt, 0, prompt.length, 0);
    float[][] out = logits(1);
    model.step(batch, cache, out);
    return out[0];
  }

  private static float[] decode(KvCache cache, int slot, int token, int position) {
    StepBatch batch = new StepBatch(1, 1);
    batch.addSequence(slot, new int[] {token}, 0, 1, position);
    float[][] out = logits(1);
    model.step(batch, cache, out);
    return out[0];
  }

  @Test
  void describesItself() {
    assertThat(model.device()).isEqualTo("cpu");
    assertThat(model.config().name()).isEqualTo("demo-byte-lm");
    assertThat(model.tokenizer()).isInstanceOf(ByteTokenizer.class);
    try (KvCache cache = model.newCache(3)) {
      assertThat(cache.slots()).isEqualTo(3);
      ModelConfig c = model.config();
      assertThat(cache.bytes())
          .isEqualTo(2L * c.layers() * 3 * c.contextLength() * c.kvHeads() * c.headDim() * 4);
    }
  }

  @Test
  void greedyThroughTheKvCacheEqualsGreedyRecomputation() {
    int[] prompt = ids("The Python interpreter ");
    int n = 40;
    List<Integer> cached = new ArrayList<>();
    try (KvCache cache = model.newCache(4)) {
      int slot = 2;
      float[] l = prefill(cache, slot, prompt);
      int position = prompt.length;
      for (int i = 0; i < n; i++) {
        int next = argmax(l);
        cached.add(next);
        l = decode(cache, slot, next, position++);
      }
    }
    List<Integer> recomputed = new ArrayList<>();
    int[] seq = Arrays.copyOf(prompt, prompt.length + n);
    for (int i = 0; i < n; i++) {
      int next = argmax(model.forwardLast(Arrays.copyOf(seq, prompt.length + i)));
      recomputed.add(next);
      seq[prompt.length + i] = next;
    }
    assertThat(cached).isEqualTo(recomputed);
    int[] generated = cached.stream().mapToInt(Integer::intValue).toArray();
    log.info(
        "greedy completion: {}{}",
        model.tokenizer().decode(prompt),
        model.tokenizer().decode(generated));
  }

  @Test
  void decodeStepSeesTheKeysAndValuesWrittenByEarlierSteps() {
    // the cache tensors are mutated in place by the TorchScript method; that must persist
    int[] text = ids("Cached keys and values persist between calls.");
    try (KvCache cache = model.newCache(1)) {
      prefill(cache, 0, Arrays.copyOf(text, 20));
      float[] l = null;
      for (int p = 20; p < text.length; p++) {
        l = decode(cache, 0, text[p], p);
      }
      assertThat(maxAbsDiff(l, model.forwardLast(text))).isLessThan(TOLERANCE);
      // a fresh cache gives different logits for the same single token: the prefix matters
      try (KvCache fresh = model.newCache(1)) {
        float[] alone = decode(fresh, 0, text[text.length - 1], text.length - 1);
        assertThat(maxAbsDiff(l, alone)).isGreaterThan(1e-2f);
      }
    }
  }

  @Test
  void packedStepOfSequencesOfDifferentLengthsMatchesEachAlone() {
    int[] a = ids("Packed sequences share one step");
    int[] b = ids("of work");
    int[] c = ids("A third, decoding one token at a time");
    try (KvCache packed = model.newCache(3);
        KvCache alone = model.newCache(3)) {
      // c already prefilled (all but its last token) in slot 2 of the packed cache
      prefill(packed, 2, Arrays.copyOf(c, c.length - 1));
      StepBatch batch = new StepBatch(64, 3);
      assertThat(batch.addSequence(0, a, 0, a.length, 0)).isEqualTo(0);
      assertThat(batch.addSequence(1, b, 0, b.length, 0)).isEqualTo(1);
      assertThat(batch.addSequence(2, c, c.length - 1, 1, c.length - 1)).isEqualTo(2);
      float[][] out = logits(3);
      model.step(batch, packed, out);

      float[] refA = prefill(alone, 0, a);
      float[] refB = prefill(alone, 1, b);
      float[] refC = model.forwardLast(c);
      assertThat(maxAbsDiff(out[0], refA)).isLessThan(TOLERANCE);
      assertThat(maxAbsDiff(out[1], refB)).isLessThan(TOLERANCE);
      assertThat(maxAbsDiff(out[2], refC)).isLessThan(TOLERANCE);
      assertThat(maxAbsDiff(out[0], model.forwardLast(a))).isLessThan(TOLERANCE);
      assertThat(maxAbsDiff(out[1], model.forwardLast(b))).isLessThan(TOLERANCE);

      // then both decode together vs alone
      batch.clear();
      batch.addSequence(0, new int[] {'!'}, 0, 1, a.length);
      batch.addSequence(1, new int[] {'?'}, 0, 1, b.length);
      model.step(batch, packed, out);
      assertThat(maxAbsDiff(out[0], decode(alone, 0, '!', a.length))).isLessThan(TOLERANCE);
      assertThat(maxAbsDiff(out[1], decode(alone, 1, '?', b.length))).isLessThan(TOLERANCE);
    }
  }

  @Test
  void aReusedSlotIgnoresTheStaleEntriesOfItsPreviousSequence() {
    int[] longer = ids("A long first sequence fills many positions of the slot with its keys.");
    int[] shorter = ids("Then a short one");
    try (KvCache cache = model.newCache(2)) {
      prefill(cache, 1, longer);
      float[] reused = prefill(cache, 1, shorter);
      assertThat(maxAbsDiff(reused, model.forwardLast(shorter))).isLessThan(TOLERANCE);
      float[] next = decode(cache, 1, '.', shorter.length);
      int[] extended = Arrays.copyOf(shorter, shorter.length + 1);
      extended[shorter.length] = '.';
      assertThat(maxAbsDiff(next, model.forwardLast(extended))).isLessThan(TOLERANCE);
    }
  }

  @Test
  void rejectsBadBatchesWithAMessage() {
    try (KvCache cache = model.newCache(2)) {
      StepBatch batch = new StepBatch(4, 1);
      batch.addSequence(2, new int[] {1}, 0, 1, 0);
      assertThatThrownBy(() -> model.step(batch, cache, logits(1)))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessageContaining("slot 2");
      batch.clear();
      batch.addSequence(0, new int[] {1}, 0, 1, model.config().contextLength());
      assertThatThrownBy(() -> model.step(batch, cache, logits(1)))
          .hasMessageContaining("position 1024");
      batch.clear();
      batch.addSequence(0, new int[] {257}, 0, 1, 0);
      assertThatThrownBy(() -> model.step(batch, cache, logits(1)))
          .hasMessageContaining("token 257");
      batch.clear();
      assertThatThrownBy(() -> model.step(batch, cache, logits(1)))
          .hasMessageContaining("empty step");
    }
    KvCache closed = model.newCache(1);
    closed.close();
    StepBatch one = new StepBatch(1, 1);
    one.addSequence(0, new int[] {1}, 0, 1, 0);
    assertThatThrownBy(() -> model.step(one, closed, logits(1)))
        .isInstanceOf(IllegalStateException.class);
  }

  @Test
  void thousandsOfStepsDoNotLeakNativeMemory() throws IOException {
    int slots = 4;
    int[] tokens = ids("memory");
    try (KvCache cache = model.newCache(slots)) {
      StepBatch batch = new StepBatch(slots, slots);
      float[][] out = logits(slots);
      Runnable step =
          new Runnable() {
            int i;

            @Override
            public void run() {
              batch.clear();
              int position = i % 64;
              for (int s = 0; s < slots; s++) {
                batch.addSequence(s, tokens, (i + s) % tokens.length, 1, position);
              }
              model.step(batch, cache, out);
              i++;
            }
          };
      for (int i = 0; i < 200; i++) {
        step.run();
      }
      int arraysBefore = model.managedArrayCount();
      long rssBefore = rssKb();
      for (int i = 0; i < 2000; i++) {
        step.run();
      }
      System.gc();
      long rssAfter = rssKb();
      log.info(
          "RSS before {} kB, after 2000 steps {} kB; managed arrays {} -> {}",
          rssBefore,
          rssAfter,
          arraysBefore,
          model.managedArrayCount());
      assertThat(model.managedArrayCount()).isEqualTo(arraysBefore);
      if (rssBefore > 0) {
        // a leak of the per-step inputs and logits would be > 2000 * 4 tensors; allow for heap
        // growth and allocator noise
        assertThat(rssAfter - rssBefore).isLessThan(150_000);
      }
    }
  }

  @Test
  void decodeLatency() {
    for (int b : new int[] {1, 32}) {
      try (KvCache cache = model.newCache(b)) {
        int[] prompt = ids("Latency of one decode step at a fixed batch size, measured here.");
        StepBatch batch = new StepBatch(b * prompt.length, b);
        for (int s = 0; s < b; s++) {
          batch.addSequence(s, prompt, 0, prompt.length, 0);
        }
        float[][] out = logits(b);
        model.step(batch, cache, out);
        int steps = 200;
        long[] ns = new long[steps];
        for (int i = 0; i < steps; i++) {
          batch.clear();
          for (int s = 0; s < b; s++) {
            batch.addSequence(s, prompt, (s + i) % prompt.length, 1, prompt.length + i);
          }
          long t0 = System.nanoTime();
          model.step(batch, cache, out);
          ns[i] = System.nanoTime() - t0;
        }
        Arrays.sort(ns);
        log.info(
            "decode step at batch {} (context ~{}): median {} us, p90 {} us",
            b,
            prompt.length + steps / 2,
            ns[steps / 2] / 1000,
            ns[steps * 9 / 10] / 1000);
        assertThat(ns[steps / 2]).isPositive();
      }
    }
  }

  private static long rssKb() throws IOException {
    Path status = Path.of("/proc/self/status");
    if (!Files.exists(status)) {
      return -1;
    }
    for (String line : Files.readAllLines(status)) {
      if (line.startsWith("VmRSS:")) {
        return Long.parseLong(line.replaceAll("[^0-9]", ""));
      }
    }
    return -1;
  }
}
