package io.gpumeter.model;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Set;

/**
 * Reads and validates a model directory's {@code model.json} (see model-store/README.md). Every
 * error names the file and, where there is one, the field.
 */
public final class ModelConfigs {
  /** The config file in a model directory. */
  public static final String FILE_NAME = "model.json";

  /** Tokenizer kinds this build can serve. */
  public static final Set<String> TOKENIZERS = Set.of("byte", "hf");

  /**
   * Parameter dtypes this build can serve: the dtype of the parameters, the KV cache and the
   * activations of the exported file (logits are float32 in every case). Whether the device can run
   * a 2-byte dtype is found when the model is loaded ({@link DjlLanguageModel#load}).
   */
  public static final Set<String> DTYPES = Set.of("float32", "float16", "bfloat16");

  private static final Set<String> FIELDS =
      Set.of(
          "name",
          "file",
          "tokenizer",
          "vocabSize",
          "contextLength",
          "eosId",
          "dtype",
          "layers",
          "kvHeads",
          "headDim",
          "eosIds");

  private static final ObjectMapper MAPPER = new ObjectMapper();

  private ModelConfigs() {}

  /**
   * Reads {@code dir/model.json}.
   *
   * @throws ModelException if the file is missing, is not a JSON object, lacks a field, has a field
   *     of the wrong type or an unknown field, holds values the contract does not allow, or names a
   *     model file that does not exist
   */
  public static ModelConfig read(Path dir) {
    Path file = dir.resolve(FILE_NAME);
    JsonNode root;
    try {
      root = MAPPER.readTree(Files.readString(file));
    } catch (NoSuchFileException e) {
      throw new ModelException(file + ": not found");
    } catch (JsonProcessingException e) {
      throw new ModelException(file + ": not valid JSON: " + e.getOriginalMessage(), e);
    } catch (IOException e) {
      throw new ModelException(file + ": cannot read: " + e, e);
    }
    if (root == null || !root.isObject()) {
      throw new ModelException(file + ": expected a JSON object");
    }
    for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
      String field = it.next();
      if (!FIELDS.contains(field)) {
        throw new ModelException(
            file + ": unknown field '" + field + "' (known: " + String.join(", ", sorted()) + ")");
      }
    }
    String name = text(file, root, "name");
    String modelFile = text(file, root, "file");
    String tokenizer = text(file, root, "tokenizer");
    int vocabSize = positive(file, root, "vocabSize");
    int contextLength = positive(file, root, "contextLength");
    int eosId = integer(file, root, "eosId");
    String dtype = text(file, root, "dtype");
    int layers = positive(file, root, "layers");
    int kvHeads = positive(file, root, "kvHeads");
    int headDim = positive(file, root, "headDim");
    List<Integer> eosIds = eosIds(file, root, eosId);

    if (!name.matches("[A-Za-z0-9][A-Za-z0-9._:-]*")) {
      throw new ModelException(
          file + ": field 'name' is '" + name + "': use letters, digits and . _ : - only");
    }
    if (!TOKENIZERS.contains(tokenizer)) {
      throw new ModelException(
          file + ": field 'tokenizer' is '" + tokenizer + "'; supported: " + TOKENIZERS);
    }
    if (!DTYPES.contains(dtype)) {
      throw new ModelException(file + ": field 'dtype' is '" + dtype + "'; supported: " + DTYPES);
    }
    if (eosId < 0 || eosId >= vocabSize) {
      throw new ModelException(
          file + ": field 'eosId' is " + eosId + ", outside the vocabulary [0, " + vocabSize + ")");
    }
    if (tokenizer.equals("byte")) {
      if (vocabSize <= ByteTokenizer.BYTE_IDS) {
        throw new ModelException(
            file
                + ": field 'vocabSize' is "
                + vocabSize
                + "; the byte tokenizer needs 256 byte ids plus end-of-sequence");
      }
      if (eosId < ByteTokenizer.BYTE_IDS) {
        throw new ModelException(
            file + ": field 'eosId' is " + eosId + ", a byte id; the byte tokenizer needs >= 256");
      }
    }
    for (int id : eosIds) {
      if (id < 0 || id >= vocabSize) {
        throw new ModelException(
            file
                + ": field 'eosIds' holds "
                + id
                + ", outside the vocabulary [0, "
                + vocabSize
                + ")");
      }
      if (tokenizer.equals("byte") && id < ByteTokenizer.BYTE_IDS) {
        throw new ModelException(
            file + ": field 'eosIds' holds " + id + ", a byte id; the byte tokenizer needs >= 256");
      }
    }
    if (tokenizer.equals("hf") && !Files.isRegularFile(dir.resolve(HfTokenizer.FILE_NAME))) {
      throw new ModelException(
          file + ": field 'tokenizer' is 'hf' but " + dir + " has no " + HfTokenizer.FILE_NAME);
    }
    Path weights = dir.resolve(modelFile).normalize();
    if (modelFile.contains("/") || modelFile.contains("\\") || !Files.isRegularFile(weights)) {
      throw new ModelException(
          file + ": field 'file' is '" + modelFile + "': no such file in " + dir);
    }
    try {
      return new ModelConfig(
          name,
          dir,
          modelFile,
          tokenizer,
          vocabSize,
          contextLength,
          eosId,
          dtype,
          layers,
          kvHeads,
          headDim,
          eosIds);
    } catch (IllegalArgumentException e) {
      throw new ModelException(file + ": " + e.getMessage(), e);
    }
  }

  /**
   * The tokenizer a config names. An {@code hf} tokenizer holds native memory, freed by {@link
   * HfTokenizer#close} or when it is garbage-collected ({@link DjlLanguageModel#close} leaves it to
   * the collector: a response may still be decoding with it after its model was unloaded).
   */
  public static Tokenizer tokenizer(ModelConfig config) {
    if (config.tokenizer().equals("byte")) {
      return new ByteTokenizer(config.vocabSize());
    }
    if (config.tokenizer().equals("hf")) {
      return HfTokenizer.open(
          config.directory().resolve(HfTokenizer.FILE_NAME), config.vocabSize());
    }
    throw new ModelException(
        "model " + config.name() + ": unsupported tokenizer '" + config.tokenizer() + "'");
  }

  /** {@code eosIds}: a non-empty list of ints starting with {@code eosId}; absent: [eosId]. */
  private static List<Integer> eosIds(Path file, JsonNode root, int eosId) {
    JsonNode node = root.get("eosIds");
    if (node == null || node.isNull()) {
      return List.of(eosId);
    }
    if (!node.isArray() || node.isEmpty()) {
      throw new ModelException(
          file + ": field 'eosIds' must be a non-empty list of integers, got " + node);
    }
    List<Integer> ids = new ArrayList<>();
    for (JsonNode id : node) {
      if (!id.isIntegralNumber() || !id.canConvertToInt()) {
        throw new ModelException(file + ": field 'eosIds' must be a list of integers, got " + node);
      }
      ids.add(id.intValue());
    }
    if (ids.get(0) != eosId) {
      throw new ModelException(
          file + ": field 'eosIds' is " + ids + "; its first id must be eosId " + eosId);
    }
    if (new HashSet<>(ids).size() != ids.size()) {
      throw new ModelException(file + ": field 'eosIds' is " + ids + ": an id appears twice");
    }
    return ids;
  }

  private static String text(Path file, JsonNode root, String field) {
    JsonNode node = required(file, root, field);
    if (!node.isTextual()) {
      throw new ModelException(
          file + ": field '" + field + "' must be a string, got " + node.getNodeType());
    }
    if (node.asText().isBlank()) {
      throw new ModelException(file + ": field '" + field + "' is blank");
    }
    return node.asText();
  }

  private static int integer(Path file, JsonNode root, String field) {
    JsonNode node = required(file, root, field);
    if (!node.isIntegralNumber() || !node.canConvertToInt()) {
      throw new ModelException(
          file + ": field '" + field + "' must be an integer, got " + node.toString());
    }
    return node.intValue();
  }

  private static int positive(Path file, JsonNode root, String field) {
    int value = integer(file, root, field);
    if (value <= 0) {
      throw new ModelException(file + ": field '" + field + "' must be > 0, got " + value);
    }
    return value;
  }

  private static JsonNode required(Path file, JsonNode root, String field) {
    JsonNode node = root.get(field);
    if (node == null || node.isNull()) {
      throw new ModelException(file + ": missing field '" + field + "'");
    }
    return node;
  }

  private static Iterable<String> sorted() {
    return FIELDS.stream().sorted()::iterator;
  }
}
