package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.model.Tokenizer;

/**
 * The {@code prompt} of {@code POST /v1/completions}, as OpenAI takes it: a string, an array of
 * strings, an array of token ids, or an array of token-id arrays. Each element of a list is one
 * prompt with its own {@code n} choices. Read once the model is known (its tokenizer and
 * vocabulary); every bad value is a 400 naming {@code prompt} and changes nothing.
 *
 * <p>An empty string (alone or in a list) is "the start of a document", as OpenAI has it: the
 * model's end-of-sequence token. An empty list, an empty token-id array, a list mixing strings,
 * integers and arrays, a nested array deeper than one level, and a token id outside the vocabulary
 * are refused.
 */
final class PromptList {
  private PromptList() {}

  /**
   * The prompts as token ids, in order.
   *
   * @param p the {@code prompt} value, present and not null
   * @throws ApiException 400 naming {@code prompt}
   */
  static int[][] parse(JsonNode p, Tokenizer tokenizer, int vocabSize, int eosId) {
    if (p.isTextual()) {
      return new int[][] {text(p.textValue(), tokenizer, eosId)};
    }
    if (!p.isArray()) {
      throw ApiException.wrongType(
          "prompt",
          "a string, an array of strings, an array of token ids or an array of token-id arrays",
          CompletionParams.describe(p));
    }
    if (p.isEmpty()) {
      throw ApiException.invalid(
          "prompt", "prompt is an empty list; send at least one prompt (or one token id).");
    }
    JsonNode first = p.get(0);
    if (first.isNumber()) {
      return new int[][] {tokenIds(p, -1, vocabSize)};
    }
    int[][] prompts = new int[p.size()][];
    for (int i = 0; i < prompts.length; i++) {
      JsonNode e = p.get(i);
      if (first.isTextual() && e.isTextual()) {
        prompts[i] = text(e.textValue(), tokenizer, eosId);
      } else if (first.isArray() && e.isArray()) {
        if (e.isEmpty()) {
          throw ApiException.invalid(
              "prompt", "the token-id prompt at index " + i + " is empty; it needs a token id.");
        }
        prompts[i] = tokenIds(e, i, vocabSize);
      } else if (i == 0) {
        throw ApiException.invalid(
            "prompt",
            "each element of a prompt list must be a string, a token id or a token-id array;"
                + " element 0 is "
                + CompletionParams.describe(e)
                + ".");
      } else {
        throw ApiException.invalid(
            "prompt",
            "every element of a prompt list must be of one kind: all strings, all token ids, or"
                + " all token-id arrays; element 0 is "
                + CompletionParams.describe(first)
                + " and element "
                + i
                + " is "
                + CompletionParams.describe(e)
                + ".");
      }
    }
    return prompts;
  }

  /**
   * The most sequences (prompts × {@code n}) one request may have. More than the model runs at once
   * is served: the choices that do not fit wait in the scheduler and run as slots free (a prompt's
   * {@code n} choices at a time), still one request with one charge. The bound keeps one request's
   * bookkeeping (a token array per choice) and its hold on the head of the queue in proportion.
   */
  static final int MAX_SEQUENCES = 2048;

  /**
   * Refuses more than {@link #MAX_SEQUENCES} sequences in one request.
   *
   * @throws ApiException 400 whose param is "prompt"
   */
  static void checkSequences(int prompts, int n) {
    if ((long) prompts * n > MAX_SEQUENCES) {
      throw ApiException.invalid(
          "prompt",
          "this request has "
              + prompts
              + " prompts × n = "
              + n
              + ", that is "
              + (long) prompts * n
              + " sequences; one request may have at most "
              + MAX_SEQUENCES
              + ". Send fewer prompts per request.");
    }
  }

  /** Sum of the prompts' lengths. */
  static long tokens(int[][] prompts) {
    long t = 0;
    for (int[] p : prompts) {
      t += p.length;
    }
    return t;
  }

  private static int[] text(String s, Tokenizer tokenizer, int eosId) {
    int[] t = tokenizer.encode(s);
    // Like OpenAI, an empty prompt means "start of a document": the end-of-sequence token.
    return t.length == 0 ? new int[] {eosId} : t;
  }

  /** {@code ids}, all integers in the vocabulary; {@code prompt} is its index in a list, or -1. */
  private static int[] tokenIds(JsonNode ids, int prompt, int vocabSize) {
    String where = prompt < 0 ? "the prompt" : "the prompt at index " + prompt;
    int[] tokens = new int[ids.size()];
    for (int i = 0; i < tokens.length; i++) {
      JsonNode t = ids.get(i);
      if (!t.isIntegralNumber() || !t.canConvertToInt()) {
        throw ApiException.invalid(
            "prompt",
            "a token-id prompt holds only integer token ids; element "
                + i
                + " of "
                + where
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
                + " of "
                + where
                + " is outside this model's vocabulary (0 to "
                + (vocabSize - 1)
                + ").");
      }
      tokens[i] = id;
    }
    return tokens;
  }
}
