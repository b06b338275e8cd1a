package io.gpumeter.batching;

import java.util.List;

/**
 * Receives generated tokens on the scheduler thread. Must not block: hand off (for example to a
 * Netty event loop) and return.
 */
@FunctionalInterface
public interface TokenListener {
  TokenListener NONE = token -> {};

  /** A token of choice 0, the only choice of most requests. */
  void onToken(int token);

  /**
   * A token of any choice, with its logprob when the request asked for logprobs (else null). The
   * scheduler calls this for every generated token; by default choice 0's go to {@link #onToken}
   * and the others are dropped.
   */
  default void onChoiceToken(int choice, int token, TokenLogprob logprob) {
    if (choice == 0) {
      onToken(token);
    }
  }

  /**
   * The logprobs of prompt {@code prompt}'s tokens after its first (a request that asked for them:
   * {@link GenerationRequest#promptLogprobs()}), called once per prompt on the scheduler thread
   * when its prefill ends, before any token of that prompt's choices. Ignored by default.
   */
  default void onPromptLogprobs(int prompt, List<TokenLogprob> logprobs) {}

  /**
   * A step's tokens are all out: called on the scheduler thread after the step's last token was
   * emitted, for every request that took part in it (once per choice of it in the step, so maybe
   * several times). A listener that hands tokens to another thread can hand over a step's tokens at
   * once here instead of one hand-off per token. A token emitted before its request's result
   * completes may not be followed by this call (the result completes during the step); a listener
   * must also look for tokens not handed over when it sees the result. Ignored by default.
   */
  default void onStepEnd() {}
}
