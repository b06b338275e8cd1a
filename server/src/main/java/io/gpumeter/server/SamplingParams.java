package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.SamplingOptions;
import java.util.Iterator;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * The sampling parameters of a request body, shared by every generating endpoint ({@code
 * /v1/completions} now, {@code /v1/chat/completions} next): {@code top_p}, {@code top_k} (an
 * extension), {@code presence_penalty}, {@code frequency_penalty} and {@code logit_bias}, read from
 * the JSON root after the endpoint has checked the body's shape. Every bad value is a 400 that
 * names the parameter; {@code logit_bias} token ids are checked against the model's vocabulary.
 * {@code temperature} and {@code seed} stay with each endpoint's own parameters.
 */
final class SamplingParams {
  /** The parameters this class reads; an endpoint accepts them as known. */
  static final Set<String> NAMES =
      Set.of("top_p", "top_k", "presence_penalty", "frequency_penalty", "logit_bias");

  private SamplingParams() {}

  /**
   * @param root the request body, a JSON object
   * @param vocabSize the model's vocabulary: {@code logit_bias} ids must be below it
   * @throws ApiException 400 naming the parameter
   */
  static SamplingOptions parse(JsonNode root, int vocabSize) {
    double topP = 1;
    JsonNode p = present(root, "top_p");
    if (p != null) {
      topP = numberIn(p, "top_p", 0, 1);
    }
    int topK = 0;
    JsonNode k = present(root, "top_k");
    if (k != null) {
      topK = (int) CompletionParams.integerIn(k, "top_k", 0, Integer.MAX_VALUE);
    }
    double presence = 0;
    JsonNode pp = present(root, "presence_penalty");
    if (pp != null) {
      presence = numberIn(pp, "presence_penalty", -2, 2);
    }
    double frequency = 0;
    JsonNode fp = present(root, "frequency_penalty");
    if (fp != null) {
      frequency = numberIn(fp, "frequency_penalty", -2, 2);
    }
    int[] biasTokens = new int[0];
    float[] biasValues = new float[0];
    JsonNode lb = present(root, "logit_bias");
    if (lb != null) {
      if (!lb.isObject()) {
        throw ApiException.wrongType(
            "logit_bias", "an object mapping token ids to biases", CompletionParams.describe(lb));
      }
      TreeMap<Integer, Float> bias = new TreeMap<>();
      for (Iterator<Map.Entry<String, JsonNode>> it = lb.fields(); it.hasNext(); ) {
        Map.Entry<String, JsonNode> e = it.next();
        int token = tokenId(e.getKey(), vocabSize);
        JsonNode v = e.getValue();
        if (!v.isNumber()) {
          throw ApiException.invalid(
              "logit_bias",
              "the bias of token "
                  + token
                  + " in 'logit_bias' must be a number from -100 to 100,"
                  + " got "
                  + CompletionParams.describe(v)
                  + ".");
        }
        double b = v.doubleValue();
        if (!(b >= -100 && b <= 100)) {
          throw ApiException.invalid(
              "logit_bias",
              "the bias of token "
                  + token
                  + " in 'logit_bias' must be from -100 to 100, got "
                  + v.asText()
                  + ".");
        }
        if (bias.put(token, (float) b) != null) {
          throw ApiException.invalid(
              "logit_bias", "token " + token + " appears twice in 'logit_bias'.");
        }
      }
      biasTokens = new int[bias.size()];
      biasValues = new float[bias.size()];
      int i = 0;
      for (Map.Entry<Integer, Float> e : bias.entrySet()) {
        biasTokens[i] = e.getKey();
        biasValues[i++] = e.getValue();
      }
    }
    if (topP == 1 && topK == 0 && presence == 0 && frequency == 0 && biasTokens.length == 0) {
      return SamplingOptions.NONE;
    }
    return new SamplingOptions(topP, topK, presence, frequency, biasTokens, biasValues);
  }

  private static int tokenId(String key, int vocabSize) {
    if (key.isEmpty() || key.length() > 10 || !key.chars().allMatch(c -> c >= '0' && c <= '9')) {
      throw ApiException.invalid(
          "logit_bias",
          "the keys of 'logit_bias' must be token ids (decimal integers), got '"
              + (key.length() > 40 ? key.substring(0, 40) + "..." : key)
              + "'.");
    }
    long id = Long.parseLong(key);
    if (id >= vocabSize) {
      throw ApiException.invalid(
          "logit_bias",
          "token id "
              + id
              + " in 'logit_bias' is outside this model's vocabulary (0 to "
              + (vocabSize - 1)
              + ").");
    }
    return (int) id;
  }

  /** A number within {@code [min, max]}; NaN, infinities and non-numbers are refused. */
  static double numberIn(JsonNode v, String param, double min, double max) {
    if (!v.isNumber()) {
      throw ApiException.wrongType(param, "a number", CompletionParams.describe(v));
    }
    double d = v.doubleValue();
    if (!(d >= min && d <= max)) {
      throw ApiException.invalid(
          param,
          "'"
              + param
              + "' must be a number from "
              + fmt(min)
              + " to "
              + fmt(max)
              + ", got "
              + v.asText()
              + ".");
    }
    return d;
  }

  private static String fmt(double d) {
    return d == Math.rint(d) ? Long.toString((long) d) : Double.toString(d);
  }

  private static JsonNode present(JsonNode root, String name) {
    JsonNode v = root.get(name);
    return v == null || v.isNull() ? null : v;
  }
}
