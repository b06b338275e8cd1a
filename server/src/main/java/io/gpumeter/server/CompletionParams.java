package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.JsonNodeType;
import io.netty.buffer.ByteBuf;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.io.IOException;
import java.math.BigDecimal;
import java.util.Iterator;
import java.util.Map;
import java.util.Set;

/**
 * A validated {@code POST /v1/completions} body. Every rule names the offending parameter in the
 * error, as OpenAI does.
 *
 * <p>Accepted: {@code model}, {@code prompt} (a string; or an array: strings, token ids or token-id
 * arrays, then {@code prompt} here is null and {@link PromptList} reads them), {@code max_tokens},
 * {@code temperature}, {@code seed}, {@code user} (the session when no {@code X-Session-Id} header
 * is given: {@link SessionIds}), {@code stream} and {@code stream_options} ({@link StreamParams}),
 * {@code stop} ({@link StopStrings}), {@code logprobs} ({@link LogprobParams}). Parameters this
 * server does not implement are accepted only with their neutral value ({@code best_of: 1}, {@code
 * suffix: null}), so a client never silently gets something else than it asked for; any other
 * parameter is refused.
 *
 * <p>The sampling parameters ({@code top_p}, {@code top_k}, the penalties, {@code logit_bias}) are
 * accepted here by name and read by {@link SamplingParams} (and {@code n}, {@code echo} by {@link
 * CompletionOptions}) from {@code body} once the model (and so the vocabulary) is known.
 *
 * @param seed the sampling seed, or null for a random one
 * @param user OpenAI's {@code user} field as sent (not yet validated as a session id), or null
 * @param body the whole request body, for the parameters read after the model is known
 * @param stream whether and how to stream
 * @param stop the stop strings
 */
record CompletionParams(
    String model,
    String prompt,
    int maxTokens,
    double temperature,
    Long seed,
    String user,
    JsonNode body,
    StreamParams stream,
    StopStrings stop) {

  /** Parameters accepted only with a neutral value: absent, null, or the value shown. */
  private static final Map<String, String> NEUTRAL =
      Map.ofEntries(Map.entry("best_of", "1"), Map.entry("suffix", "null"));

  private static final Set<String> KNOWN =
      Set.of(
          "model",
          "prompt",
          "max_tokens",
          "temperature",
          "seed",
          "user",
          "stream",
          "stream_options",
          "stop",
          "logprobs");

  /**
   * @throws ApiException 400 naming the parameter for every invalid request
   */
  static CompletionParams parse(ByteBuf body, int maxTokensDefault, int maxTokensCap) {
    JsonNode root;
    try {
      root = Json.read(body);
    } catch (IOException e) {
      throw new ApiException(
          HttpResponseStatus.BAD_REQUEST,
          ApiException.INVALID_REQUEST,
          "We could not parse the JSON body of your request: "
              + firstLine(e.getMessage())
              + ". The body must be a JSON object, sent with Content-Type: application/json.",
          null,
          "invalid_json");
    }
    if (root == null || root.isMissingNode()) {
      throw new ApiException(
          HttpResponseStatus.BAD_REQUEST,
          ApiException.INVALID_REQUEST,
          "The request body is empty; send a JSON object with at least 'model' and 'prompt'.",
          null,
          "invalid_json");
    }
    if (!root.isObject()) {
      throw new ApiException(
          HttpResponseStatus.BAD_REQUEST,
          ApiException.INVALID_REQUEST,
          "The request body must be a JSON object, got " + describe(root) + ".",
          null,
          "invalid_json");
    }
    for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
      String name = it.next();
      if (!KNOWN.contains(name)
          && !NEUTRAL.containsKey(name)
          && !SamplingParams.NAMES.contains(name)
          && !CompletionOptions.NAMES.contains(name)) {
        throw ApiException.invalid(name, "Unrecognized request argument supplied: " + name);
      }
    }

    String model = requiredString(root, "model");
    String prompt = prompt(root);

    int maxTokens = maxTokensDefault;
    JsonNode mt = present(root, "max_tokens");
    if (mt != null) {
      maxTokens = (int) integerIn(mt, "max_tokens", 1, maxTokensCap);
    }

    double temperature = 1.0;
    JsonNode t = present(root, "temperature");
    if (t != null) {
      if (!t.isNumber()) {
        throw ApiException.wrongType("temperature", "a number", describe(t));
      }
      temperature = t.doubleValue();
      if (!(temperature >= 0 && temperature <= 2)) {
        throw ApiException.invalid(
            "temperature", "temperature must be between 0 and 2, got " + t.asText() + ".");
      }
    }

    Long seed = null;
    JsonNode s = present(root, "seed");
    if (s != null) {
      seed = integerIn(s, "seed", Long.MIN_VALUE, Long.MAX_VALUE);
    }

    JsonNode user = present(root, "user");
    if (user != null && !user.isTextual()) {
      throw ApiException.wrongType("user", "a string", describe(user));
    }

    StreamParams stream = StreamParams.parse(root);
    StopStrings stop = StopStrings.parse(root.get("stop"));

    for (Map.Entry<String, String> e : NEUTRAL.entrySet()) {
      JsonNode v = present(root, e.getKey());
      if (v != null && !isNeutral(v, e.getValue())) {
        throw ApiException.invalid(
            e.getKey(),
            "'"
                + e.getKey()
                + "' is not supported yet; omit it"
                + (e.getValue().equals("null") ? "" : " or set it to " + e.getValue())
                + ".");
      }
    }
    return new CompletionParams(
        model,
        prompt,
        maxTokens,
        temperature,
        seed,
        user == null ? null : user.textValue(),
        root,
        stream,
        stop);
  }

  /**
   * An integer parameter within {@code [min, max]}. A number with a fraction is the wrong type; an
   * integer out of the range (however large, {@code 1e30} included) is a 400 that names the range.
   */
  static long integerIn(JsonNode v, String param, long min, long max) {
    if (!v.isNumber()) {
      throw ApiException.wrongType(param, "an integer", describe(v));
    }
    BigDecimal value;
    if (v.isFloatingPointNumber() && !Double.isFinite(v.doubleValue()) && !v.isBigDecimal()) {
      value = null; // 1e400 reads as infinity: out of every range
    } else {
      value = v.decimalValue();
      if (value.signum() != 0 && value.stripTrailingZeros().scale() > 0) {
        throw ApiException.wrongType(param, "an integer", describe(v));
      }
    }
    if (value == null
        || value.compareTo(BigDecimal.valueOf(min)) < 0
        || value.compareTo(BigDecimal.valueOf(max)) > 0) {
      throw ApiException.invalid(
          param,
          "'"
              + param
              + "' must be an integer from "
              + min
              + " to "
              + max
              + ", got "
              + firstLine(v.asText())
              + ".");
    }
    return value.longValueExact();
  }

  private static boolean isNeutral(JsonNode v, String neutral) {
    return switch (neutral) {
      case "1" -> v.isNumber() && v.doubleValue() == 1;
      case "0" -> v.isNumber() && v.doubleValue() == 0;
      case "false" -> v.isBoolean() && !v.booleanValue();
      case "{}" -> v.isObject() && v.isEmpty();
      default -> (v.isArray() || v.isObject()) && v.isEmpty();
    };
  }

  private static String prompt(JsonNode root) {
    JsonNode p = present(root, "prompt");
    if (p == null) {
      throw ApiException.missing("prompt");
    }
    if (p.isTextual()) {
      return p.textValue();
    }
    if (p.isArray()) {
      return null; // a list or token ids: read by PromptList once the vocabulary is known
    }
    throw ApiException.wrongType(
        "prompt",
        "a string, an array of strings, an array of token ids or an array of token-id arrays",
        describe(p));
  }

  private static String requiredString(JsonNode root, String name) {
    JsonNode v = present(root, name);
    if (v == null) {
      throw ApiException.missing(name);
    }
    if (!v.isTextual()) {
      throw ApiException.wrongType(name, "a string", describe(v));
    }
    return v.textValue();
  }

  /** The value, or null when absent or JSON null (OpenAI treats both as "not given"). */
  private static JsonNode present(JsonNode root, String name) {
    JsonNode v = root.get(name);
    return v == null || v.isNull() ? null : v;
  }

  static String describe(JsonNode v) {
    JsonNodeType type = v.getNodeType();
    return switch (type) {
      case STRING -> "a string";
      case NUMBER ->
          v.isIntegralNumber()
              ? "an integer (" + v.asText() + ")"
              : "a number (" + v.asText() + ")";
      case BOOLEAN -> "a boolean";
      case ARRAY -> "an array";
      case OBJECT -> "an object";
      case NULL -> "null";
      default -> type.name().toLowerCase(java.util.Locale.ROOT);
    };
  }

  private static String firstLine(String s) {
    if (s == null) {
      return "malformed JSON";
    }
    int nl = s.indexOf('\n');
    String line = nl < 0 ? s : s.substring(0, nl);
    return line.length() > 200 ? line.substring(0, 200) : line;
  }
}
