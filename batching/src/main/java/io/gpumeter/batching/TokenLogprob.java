package io.gpumeter.batching;

/**
 * The log probability of one generated token and of the most likely alternatives at its position,
 * from the log-softmax of the model's own logits for that step (before {@code logit_bias}, the
 * penalties, temperature, top-k and top-p: the model's distribution, as OpenAI reports it).
 *
 * @param token the generated token
 * @param logprob its natural-log probability
 * @param topTokens the most likely tokens at this position, most likely first (ties: lower id
 *     first), as many as the request asked for (fewer only if the vocabulary is smaller)
 * @param topLogprobs their log probabilities, in the same order
 */
public record TokenLogprob(int token, float logprob, int[] topTokens, float[] topLogprobs) {}
