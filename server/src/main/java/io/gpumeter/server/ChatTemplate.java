package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;
import com.hubspot.jinjava.Jinjava;
import com.hubspot.jinjava.JinjavaConfig;
import com.hubspot.jinjava.interpret.RenderResult;
import com.hubspot.jinjava.interpret.TemplateError;
import io.gpumeter.model.ModelException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A model's chat template: the Jinja template of the model directory's Hugging Face {@code
 * tokenizer_config.json} ({@code chat_template}), rendered with Jinjava the way Hugging Face's
 * {@code apply_chat_template} does (blocks trimmed and left-stripped; variables {@code messages}
 * (each with {@code role} and {@code content}), {@code add_generation_prompt} (true), {@code
 * bos_token} and {@code eos_token} (from the same file, empty when absent)).
 *
 * <p>Loaded once at start; a template that does not parse fails the start, naming the file.
 * Thread-safe: Jinjava renders each call with its own interpreter.
 */
final class ChatTemplate {
  static final String FILE_NAME = "tokenizer_config.json";

  private static final Jinjava JINJAVA =
      new Jinjava(JinjavaConfig.newBuilder().withTrimBlocks(true).withLstripBlocks(true).build());

  private final String source;
  private final String template;
  private final String bosToken;
  private final String eosToken;

  private ChatTemplate(String source, String template, String bosToken, String eosToken) {
    this.source = source;
    this.template = template;
    this.bosToken = bosToken;
    this.eosToken = eosToken;
  }

  /**
   * The template of the model in {@code dir}, or null when the directory has no {@value #FILE_NAME}
   * or the file has no {@code chat_template}.
   *
   * @throws ModelException if the file is not valid JSON, its template is not a string, or the
   *     template does not render on a sample conversation
   */
  static ChatTemplate load(Path dir) {
    Path file = dir.resolve(FILE_NAME);
    JsonNode root;
    try {
      root = Json.MAPPER.readTree(Files.readString(file));
    } catch (NoSuchFileException e) {
      return null;
    } catch (IOException e) {
      throw new ModelException(file + ": not readable as JSON: " + e.getMessage(), e);
    }
    JsonNode t = root == null ? null : root.get("chat_template");
    if (t == null || t.isNull()) {
      return null;
    }
    if (!t.isTextual()) {
      throw new ModelException(
          file + ": chat_template must be a string (named template lists are not supported)");
    }
    ChatTemplate ct =
        new ChatTemplate(
            file.toString(), t.textValue(), token(root, "bos_token"), token(root, "eos_token"));
    ct.render(
        List.of(
            new ChatParams.Message("system", "s"),
            new ChatParams.Message("user", "u"),
            new ChatParams.Message("assistant", "a"),
            new ChatParams.Message("user", "u")));
    return ct;
  }

  /** A token as tokenizer_config.json writes it: a string, or an object with {@code content}. */
  private static String token(JsonNode root, String name) {
    JsonNode v = root.get(name);
    if (v == null || v.isNull()) {
      return "";
    }
    if (v.isTextual()) {
      return v.textValue();
    }
    JsonNode c = v.get("content");
    return c != null && c.isTextual() ? c.textValue() : "";
  }

  /**
   * The prompt text for {@code messages}, ending with the assistant's turn.
   *
   * @throws ModelException if the template fails on them
   */
  String render(List<ChatParams.Message> messages) {
    List<Map<String, Object>> ms = new ArrayList<>(messages.size());
    for (ChatParams.Message m : messages) {
      Map<String, Object> e = new HashMap<>();
      e.put("role", m.role());
      e.put("content", m.content());
      ms.add(e);
    }
    Map<String, Object> context = new HashMap<>();
    context.put("messages", ms);
    context.put("add_generation_prompt", true);
    context.put("bos_token", bosToken);
    context.put("eos_token", eosToken);
    RenderResult r = JINJAVA.renderForResult(template, context);
    for (TemplateError e : r.getErrors()) {
      if (e.getSeverity() == TemplateError.ErrorType.FATAL) {
        throw new ModelException(source + ": chat_template failed: " + e.getMessage());
      }
    }
    return r.getOutput();
  }
}
