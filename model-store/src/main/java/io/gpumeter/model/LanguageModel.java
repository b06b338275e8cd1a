package io.gpumeter.model;

/**
 * A loaded, warmed causal language model, ready to serve. Not thread-safe: one scheduler thread
 * drives it. See model-store/README.md for the TorchScript contract behind it.
 */
public interface LanguageModel extends AutoCloseable {

  ModelConfig config();

  Tokenizer tokenizer();

  /** {@code cpu} or {@code cuda:N}: where the weights and KV caches live. */
  String device();

  /**
   * Allocates a KV cache with {@code slots} sequence slots of {@link ModelConfig#contextLength()}
   * positions each, on the model's device. A slot is reused by a new sequence without clearing:
   * positions beyond a sequence's own are masked by the model.
   */
  KvCache newCache(int slots);

  /**
   * Runs one packed step: writes the keys and values of every token in {@code batch} into {@code
   * cache} at (slot, position), attends each token to its own slot's positions up to its own, and
   * copies to the host the logits of each sequence's last token in the step into {@code
   * logits[seq][0..vocabSize)}. Returns once the logits are on the host.
   *
   * @throws ModelException if the engine fails; the cache contents are then undefined for the slots
   *     in the batch
   */
  void step(StepBatch batch, KvCache cache, float[][] logits);

  /**
   * Copies the keys and values of positions {@code [0, positions)} of slot {@code fromSlot} into
   * slot {@code toSlot} of {@code cache}, on the device. A sequence forked from another (the {@code
   * n} choices of one prompt) then continues from the copy exactly as if it had been prefilled
   * itself; the other positions of {@code toSlot} are left as they are (masked, as for any reused
   * slot). Returns once the copy is done (the caller times it like a step).
   *
   * @throws IllegalArgumentException if a slot is outside the cache, the slots are the same, or
   *     {@code positions} is not in [1, context length]
   * @throws ModelException if the engine fails
   */
  void copyPrefix(KvCache cache, int fromSlot, int toSlot, int positions);

  /**
   * Full recomputation without a cache: the logits of the last position of {@code tokens}. Used to
   * check that the cached path generates the same tokens.
   */
  float[] forwardLast(int[] tokens);

  @Override
  void close();
}
