package io.gpumeter.model;

import java.util.List;
import java.util.Objects;

/**
 * The shape of one packed step, for calibration and benchmarks: which sequences take part, each
 * with its token count and its context after the step. {@link #fill} turns it into a {@link
 * StepBatch} (sequence {@code i} in cache slot {@code i}, its tokens at positions {@code context -
 * tokens .. context - 1}); the cache contents are whatever the slot holds, which does not change
 * the work a step does.
 *
 * @param members the sequences, in step order (decodes first, as the scheduler orders them)
 */
public record StepShape(List<Member> members) {

  /**
   * One sequence in a step.
   *
   * @param prefill a prompt chunk ({@code true}) or a decode step of one token
   * @param tokens tokens processed in the step
   * @param context positions in the cache after the step ({@code >= tokens})
   */
  public record Member(boolean prefill, int tokens, int context) {
    public Member {
      if (tokens < 1 || context < tokens || (!prefill && tokens != 1)) {
        throw new IllegalArgumentException(
            "bad member: prefill=" + prefill + " tokens=" + tokens + " context=" + context);
      }
    }
  }

  public StepShape {
    members = List.copyOf(Objects.requireNonNull(members, "members"));
    if (members.isEmpty()) {
      throw new IllegalArgumentException("a step has at least one sequence");
    }
  }

  /** Prompt tokens in the step. */
  public int prefillTokens() {
    return members.stream().filter(Member::prefill).mapToInt(Member::tokens).sum();
  }

  /** Decode sequences in the step. */
  public int decodes() {
    return (int) members.stream().filter(m -> !m.prefill()).count();
  }

  /** The members' contexts added up. */
  public long contextSum() {
    return members.stream().mapToLong(Member::context).sum();
  }

  /**
   * Σ over the members of tokens × context: the attention work of the step (a prompt chunk's tokens
   * each attend to up to its context; a decode's one token to its context).
   */
  public long tokenContextSum() {
    return members.stream().mapToLong(m -> (long) m.tokens() * m.context()).sum();
  }

  /** The largest context of a member (the cache must hold it). */
  public int maxContext() {
    return members.stream().mapToInt(Member::context).max().orElse(0);
  }

  /** The same step without member {@code i}, or {@code null} if it was the only one. */
  public StepShape without(int i) {
    if (members.size() == 1) {
      return null;
    }
    List<Member> rest = new java.util.ArrayList<>(members);
    rest.remove(i);
    return new StepShape(rest);
  }

  /**
   * Fills {@code batch} (cleared first) with this step for a model of {@code vocabSize} tokens.
   *
   * @throws IllegalArgumentException if a member's context passes {@code contextLength}
   */
  public void fill(StepBatch batch, int vocabSize, int contextLength) {
    batch.clear();
    int[] ids = new int[contextLength];
    for (int i = 0; i < ids.length; i++) {
      ids[i] = (i * 31 + 7) % Math.min(vocabSize, 256);
    }
    for (int i = 0; i < members.size(); i++) {
      Member m = members.get(i);
      if (m.context() > contextLength) {
        throw new IllegalArgumentException(
            "context " + m.context() + " passes the model's " + contextLength);
      }
      int start = m.context() - m.tokens();
      batch.addSequence(i, ids, start, m.tokens(), start);
    }
  }
}
