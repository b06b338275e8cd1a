package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * The logprobs parameters of both generating endpoints, as a count of alternatives per token: -1
 * for none. Every bad value is a 400 naming the parameter.
 *
 * <ul>
 *   <li>{@code /v1/completions}: {@code logprobs}, an integer from 0 to {@value #MAX_COMPLETION}
 *       (null or absent: none).
 *   <li>{@code /v1/chat/completions}: {@code logprobs}, a boolean, and {@code top_logprobs}, an
 *       integer from 0 to {@value #MAX_CHAT} that needs {@code logprobs: true}.
 * </ul>
 */
final class LogprobParams {
  static final int NONE = -1;
  static final int MAX_COMPLETION = 5;
  static final int MAX_CHAT = 20;

  private LogprobParams() {}

  /** The completions form. */
  static int completion(JsonNode root) {
    JsonNode v = present(root, "logprobs");
    return v == null ? NONE : (int) CompletionParams.integerIn(v, "logprobs", 0, MAX_COMPLETION);
  }

  /** The chat form. */
  static int chat(JsonNode root) {
    JsonNode lp = present(root, "logprobs");
    if (lp != null && !lp.isBoolean()) {
      throw ApiException.wrongType("logprobs", "a boolean", CompletionParams.describe(lp));
    }
    boolean on = lp != null && lp.booleanValue();
    JsonNode top = present(root, "top_logprobs");
    if (top == null) {
      return on ? 0 : NONE;
    }
    int k = (int) CompletionParams.integerIn(top, "top_logprobs", 0, MAX_CHAT);
    if (!on) {
      throw ApiException.invalid(
          "top_logprobs", "'top_logprobs' needs 'logprobs' to be true; set logprobs: true.");
    }
    return k;
  }

  private static JsonNode present(JsonNode root, String name) {
    JsonNode v = root.get(name);
    return v == null || v.isNull() ? null : v;
  }
}
