package io.gpumeter.batching;

/**
 * One of the {@code n} choices of a finished generation.
 *
 * @param index the choice's index within its request, 0 to n - 1
 * @param tokens the tokens it generated (end-of-sequence excluded)
 * @param finishReason why this choice ended
 */
public record Choice(int index, int[] tokens, FinishReason finishReason) {}
