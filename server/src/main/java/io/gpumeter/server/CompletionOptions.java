package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.Set;

/**
 * The {@code /v1/completions} parameters that shape its choices rather than its sampling: {@code n}
 * and {@code echo}, and a prompt given as token ids. Read from the request body once the model (its
 * vocabulary, its scheduler's slots) is known; every bad value is a 400 naming the parameter.
 *
 * @param n choices to generate from the prompt, 1 to {@link #MAX_N} and at most the model's
 *     scheduler slots
 * @param echo whether each choice's text starts with the prompt's text
 * @param promptTokens the prompt as token ids, or null when it was given as text
 */
record CompletionOptions(int n, boolean echo, int[] promptTokens) {
  /** The parameters read here; the endpoint accepts them as known. */
  static final Set<String> NAMES = Set.of("n", "echo");

  /** OpenAI's own bound on {@code n}. */
  static final int MAX_N = 128;

  /**
   * @param maxRunning the model's scheduler slots: {@code n} choices run at once
   * @throws ApiException 400 naming the parameter
   */
  static CompletionOptions parse(JsonNode root, int maxRunning, int vocabSize) {
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
    return new CompletionOptions(n, echo, promptTokens(present(root, "prompt"), vocabSize));
  }

  /** Whether {@code prompt} is given as token ids: an array of integers, or an array of one. */
  static boolean isTokenPrompt(JsonNode p) {
    return p != null
        && p.isArray()
        && !p.isEmpty()
        && (p.get(0).isNumber() || (p.get(0).isArray() && p.size() == 1));
  }

  private static int[] promptTokens(JsonNode p, int vocabSize) {
    if (!isTokenPrompt(p)) {
      return null;
    }
    JsonNode ids = p.get(0).isArray() ? p.get(0) : p;
    if (ids.isEmpty()) {
      throw ApiException.invalid("prompt", "a token-id prompt must hold at least one token id.");
    }
    int[] tokens = new int[ids.size()];
    for (int i = 0; i < tokens.length; i++) {
      JsonNode t = ids.get(i);
      if (!t.isIntegralNumber() || !t.canConvertToInt()) {
        throw ApiException.invalid(
            "prompt",
            "a token-id prompt must hold only integer token ids; element "
                + i
                + " is "
                + CompletionParams.describe(t)
                + ".");
      }
      int id = t.intValue();
      if (id < 0 || id >= vocabSize) {
        throw ApiException.invalid(
            "prompt",
            "token id "
                + id
                + " at index "
                + i
                + " of the prompt is outside this model's vocabulary (0 to "
                + (vocabSize - 1)
                + ").");
      }
      tokens[i] = id;
    }
    return tokens;
  }

  private static JsonNode present(JsonNode root, String name) {
    JsonNode v = root.get(name);
    return v == null || v.isNull() ? null : v;
  }
}
