package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.Set;

/**
 * The {@code /v1/completions} parameters that shape its choices rather than its sampling: {@code n}
 * and {@code echo} (the prompt itself, a list or token ids included, is {@link PromptList}'s). Read
 * from the request body once the model (its scheduler's slots) is known; every bad value is a 400
 * naming the parameter.
 *
 * @param n choices to generate from the prompt, 1 to {@link #MAX_N} and at most the model's
 *     scheduler slots
 * @param echo whether each choice's text starts with its prompt's text (and, with {@code logprobs},
 *     its logprobs with the prompt's tokens')
 */
record CompletionOptions(int n, boolean echo) {
  /** The parameters read here; the endpoint accepts them as known. */
  static final Set<String> NAMES = Set.of("n", "echo");

  /** OpenAI's own bound on {@code n}. */
  static final int MAX_N = 128;

  /**
   * @param maxRunning the model's scheduler slots: {@code n} choices run at once
   * @throws ApiException 400 naming the parameter
   */
  static CompletionOptions parse(JsonNode root, int maxRunning) {
    int n = 1;
    JsonNode nv = present(root, "n");
    if (nv != null) {
      n = (int) CompletionParams.integerIn(nv, "n", 1, MAX_N);
      if (n > maxRunning) {
        throw ApiException.invalid(
            "n",
            "n is "
                + n
                + " but this model runs at most "
                + maxRunning
                + " sequences at a time (scheduler.max_running); ask for fewer choices.");
      }
    }
    boolean echo = false;
    JsonNode ev = present(root, "echo");
    if (ev != null) {
      if (!ev.isBoolean()) {
        throw ApiException.wrongType("echo", "a boolean", CompletionParams.describe(ev));
      }
      echo = ev.booleanValue();
    }
    return new CompletionOptions(n, echo);
  }

  private static JsonNode present(JsonNode root, String name) {
    JsonNode v = root.get(name);
    return v == null || v.isNull() ? null : v;
  }
}
