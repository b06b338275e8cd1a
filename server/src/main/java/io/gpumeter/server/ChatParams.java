package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;
import io.netty.buffer.ByteBuf;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A validated {@code POST /v1/chat/completions} body. Every rule names the offending parameter (for
 * a message, its path: {@code messages[2].content}).
 *
 * <p>Accepted: {@code model}, {@code messages} (roles {@code system}, {@code developer} (read as
 * system), {@code user}, {@code assistant}; {@code content} a string or an array of {@code text}
 * parts; an optional {@code name}), {@code max_completion_tokens} or its older name {@code
 * max_tokens} (not both), {@code temperature}, {@code seed}, {@code stop}, {@code stream}, {@code
 * stream_options}, {@code user} (ignored). Parameters this server does not implement are accepted
 * only with their neutral value, as for completions; any other parameter is refused.
 *
 * <p>Read later from {@code body}, once the model is known, through the same classes as for
 * completions: the sampling parameters ({@link SamplingParams}), {@code n} ({@link
 * CompletionOptions}), {@code logprobs} and {@code top_logprobs} ({@link LogprobParams#chat}).
 *
 * @param body the whole request body, for the parameters read after the model is known
 */
record ChatParams(
    String model,
    List<ChatParams.Message> messages,
    int maxTokens,
    double temperature,
    Long seed,
    StreamParams stream,
    StopStrings stop,
    String user,
    JsonNode body) {

  /** One message, its content already joined from its text parts. */
  record Message(String role, String content) {}

  private static final Set<String> ROLES = Set.of("system", "developer", "user", "assistant");

  private static final Map<String, String> NEUTRAL =
      Map.ofEntries(
          Map.entry("tools", "null"),
          Map.entry("tool_choice", "null"),
          Map.entry("parallel_tool_calls", "null"),
          Map.entry("response_format", "null"),
          Map.entry("metadata", "null"),
          Map.entry("store", "false"));

  private static final Set<String> KNOWN =
      Set.of(
          "model",
          "messages",
          "max_tokens",
          "max_completion_tokens",
          "temperature",
          "seed",
          "user",
          "stream",
          "stream_options",
          "stop",
          "n",
          "logprobs",
          "top_logprobs");

  /**
   * @throws ApiException 400 naming the parameter for every invalid request
   */
  static ChatParams parse(ByteBuf body, int maxTokensDefault, int maxTokensCap) {
    JsonNode root;
    try {
      root = Json.read(body);
    } catch (IOException e) {
      throw new ApiException(
          HttpResponseStatus.BAD_REQUEST,
          ApiException.INVALID_REQUEST,
          "We could not parse the JSON body of your request. The body must be a JSON object, sent"
              + " with Content-Type: application/json.",
          null,
          "invalid_json");
    }
    if (root == null || !root.isObject()) {
      throw new ApiException(
          HttpResponseStatus.BAD_REQUEST,
          ApiException.INVALID_REQUEST,
          "The request body must be a JSON object with at least 'model' and 'messages'.",
          null,
          "invalid_json");
    }
    for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
      String name = it.next();
      if (!KNOWN.contains(name)
          && !NEUTRAL.containsKey(name)
          && !SamplingParams.NAMES.contains(name)) {
        throw ApiException.invalid(name, "Unrecognized request argument supplied: " + name);
      }
    }
    String model = string(root, "model", "model");
    List<Message> messages = messages(root);

    JsonNode mt = present(root, "max_tokens");
    JsonNode mct = present(root, "max_completion_tokens");
    if (mt != null && mct != null) {
      throw ApiException.invalid(
          "max_tokens",
          "'max_tokens' is the older name of 'max_completion_tokens'; send only one of them.");
    }
    int maxTokens = maxTokensDefault;
    if (mct != null) {
      maxTokens = (int) CompletionParams.integerIn(mct, "max_completion_tokens", 1, maxTokensCap);
    } else if (mt != null) {
      maxTokens = (int) CompletionParams.integerIn(mt, "max_tokens", 1, maxTokensCap);
    }

    double temperature = 1.0;
    JsonNode t = present(root, "temperature");
    if (t != null) {
      if (!t.isNumber()) {
        throw ApiException.wrongType("temperature", "a number", kind(t));
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
      seed = CompletionParams.integerIn(s, "seed", Long.MIN_VALUE, Long.MAX_VALUE);
    }
    JsonNode user = present(root, "user");
    if (user != null && !user.isTextual()) {
      throw ApiException.wrongType("user", "a string", kind(user));
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
    return new ChatParams(
        model,
        messages,
        maxTokens,
        temperature,
        seed,
        stream,
        stop,
        user == null ? null : user.textValue(),
        root);
  }

  private static List<Message> messages(JsonNode root) {
    JsonNode ms = present(root, "messages");
    if (ms == null) {
      throw ApiException.missing("messages");
    }
    if (!ms.isArray()) {
      throw ApiException.wrongType("messages", "an array", kind(ms));
    }
    if (ms.isEmpty()) {
      throw ApiException.invalid("messages", "'messages' must hold at least one message.");
    }
    List<Message> out = new ArrayList<>(ms.size());
    for (int i = 0; i < ms.size(); i++) {
      String at = "messages[" + i + "]";
      JsonNode m = ms.get(i);
      if (!m.isObject()) {
        throw ApiException.wrongType(at, "an object", kind(m));
      }
      for (Iterator<String> it = m.fieldNames(); it.hasNext(); ) {
        String name = it.next();
        if (!name.equals("role") && !name.equals("content") && !name.equals("name")) {
          throw ApiException.invalid(
              at + "." + name, "Unsupported message field '" + name + "' in " + at + ".");
        }
      }
      String role = string(m, "role", at + ".role");
      if (!ROLES.contains(role)) {
        throw ApiException.invalid(
            at + ".role",
            "Invalid role '"
                + role
                + "' in "
                + at
                + "; supported roles are system, developer, user and assistant.");
      }
      JsonNode name = present(m, "name");
      if (name != null && !name.isTextual()) {
        throw ApiException.wrongType(at + ".name", "a string", kind(name));
      }
      out.add(new Message(role.equals("developer") ? "system" : role, content(m, at)));
    }
    return List.copyOf(out);
  }

  private static String content(JsonNode m, String at) {
    JsonNode c = present(m, "content");
    String param = at + ".content";
    if (c == null) {
      throw ApiException.missing(param);
    }
    if (c.isTextual()) {
      return c.textValue();
    }
    if (!c.isArray()) {
      throw ApiException.wrongType(param, "a string or an array of text parts", kind(c));
    }
    StringBuilder text = new StringBuilder();
    for (int j = 0; j < c.size(); j++) {
      JsonNode part = c.get(j);
      String partAt = param + "[" + j + "]";
      if (!part.isObject()) {
        throw ApiException.wrongType(partAt, "an object", kind(part));
      }
      JsonNode type = part.get("type");
      if (type == null || !type.isTextual() || !type.textValue().equals("text")) {
        throw ApiException.invalid(
            partAt + ".type",
            "Only content parts of type 'text' are supported"
                + (type != null && type.isTextual() ? ", got '" + type.textValue() + "'" : "")
                + ".");
      }
      for (Iterator<String> it = part.fieldNames(); it.hasNext(); ) {
        String name = it.next();
        if (!name.equals("type") && !name.equals("text")) {
          throw ApiException.invalid(
              partAt + "." + name, "Unsupported content part field '" + name + "'.");
        }
      }
      text.append(string(part, "text", partAt + ".text"));
    }
    return text.toString();
  }

  private static String string(JsonNode node, String field, String param) {
    JsonNode v = present(node, field);
    if (v == null) {
      throw ApiException.missing(param);
    }
    if (!v.isTextual()) {
      throw ApiException.wrongType(param, "a string", kind(v));
    }
    return v.textValue();
  }

  private static JsonNode present(JsonNode root, String name) {
    JsonNode v = root.get(name);
    return v == null || v.isNull() ? null : v;
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

  private static String kind(JsonNode v) {
    return switch (v.getNodeType()) {
      case STRING -> "a string";
      case NUMBER -> "a number (" + v.asText() + ")";
      case BOOLEAN -> "a boolean";
      case ARRAY -> "an array";
      case OBJECT -> "an object";
      default -> "null";
    };
  }
}
