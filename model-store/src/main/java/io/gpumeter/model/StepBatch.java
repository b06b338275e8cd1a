package io.gpumeter.model;

/**
 * Reusable input buffer for one packed model step (see model-store/README.md, method {@code step}).
 * Tokens of all sequences in the step are laid out flat: sequence {@code s} contributes tokens
 * {@code [start_s, start_s + len_s)}; each token carries its KV cache slot and its position. For
 * each sequence the model returns the logits of its last token in the step.
 *
 * <p>Owned by one scheduler thread; {@link #clear()} between steps. Grows but never shrinks, so the
 * steady state allocates nothing.
 */
public final class StepBatch {
  private long[] tokens;
  private long[] slots;
  private long[] positions;
  private long[] lastIndex;
  private int tokenCount;
  private int sequenceCount;

  public StepBatch(int tokenCapacity, int sequenceCapacity) {
    tokens = new long[Math.max(1, tokenCapacity)];
    slots = new long[tokens.length];
    positions = new long[tokens.length];
    lastIndex = new long[Math.max(1, sequenceCapacity)];
  }

  public void clear() {
    tokenCount = 0;
    sequenceCount = 0;
  }

  /**
   * Adds {@code len} tokens of one sequence, from {@code ids[from..from+len)}, at cache slot {@code
   * slot}, positions {@code firstPosition..firstPosition+len-1}.
   *
   * @return the sequence's index in this step (row of the logits output)
   */
  public int addSequence(int slot, int[] ids, int from, int len, int firstPosition) {
    if (len <= 0) {
      throw new IllegalArgumentException("a sequence contributes at least one token, got " + len);
    }
    ensureTokens(tokenCount + len);
    if (sequenceCount == lastIndex.length) {
      lastIndex = java.util.Arrays.copyOf(lastIndex, lastIndex.length * 2);
    }
    for (int i = 0; i < len; i++) {
      tokens[tokenCount + i] = ids[from + i];
      slots[tokenCount + i] = slot;
      positions[tokenCount + i] = firstPosition + i;
    }
    tokenCount += len;
    lastIndex[sequenceCount] = tokenCount - 1;
    return sequenceCount++;
  }

  private void ensureTokens(int needed) {
    if (needed > tokens.length) {
      int cap = Math.max(needed, tokens.length * 2);
      tokens = java.util.Arrays.copyOf(tokens, cap);
      slots = java.util.Arrays.copyOf(slots, cap);
      positions = java.util.Arrays.copyOf(positions, cap);
    }
  }

  public int tokenCount() {
    return tokenCount;
  }

  public int sequenceCount() {
    return sequenceCount;
  }

  /** Backing arrays; only the first {@link #tokenCount()} / {@link #sequenceCount()} are valid. */
  public long[] tokens() {
    return tokens;
  }

  public long[] slots() {
    return slots;
  }

  public long[] positions() {
    return positions;
  }

  public long[] lastIndex() {
    return lastIndex;
  }
}
