package io.gpumeter.batching;

/**
 * One of the {@code n} choices of a finished generation.
 *
 * @param index the choice's index within its request, 0 to n - 1
 * @param tokens the tokens it generated (end-of-sequence excluded)
 * @param finishReason why this choice ended
 * @param logprobs one per generated token, in order, when the request asked for logprobs ({@link
 *     GenerationRequest#topLogprobs()} &ge; 0), else null
 * @param promptLogprobs one per token of the choice's prompt after the first (whose logprob has no
 *     context), when the request asked for them ({@link GenerationRequest#promptLogprobs()}), else
 *     null
 */
public record Choice(
    int index,
    int[] tokens,
    FinishReason finishReason,
    java.util.List<TokenLogprob> logprobs,
    java.util.List<TokenLogprob> promptLogprobs) {
  /** A choice without its prompt's logprobs. */
  public Choice(
      int index, int[] tokens, FinishReason finishReason, java.util.List<TokenLogprob> logprobs) {
    this(index, tokens, finishReason, logprobs, null);
  }

  /** A choice without logprobs. */
  public Choice(int index, int[] tokens, FinishReason finishReason) {
    this(index, tokens, finishReason, null);
  }
}
