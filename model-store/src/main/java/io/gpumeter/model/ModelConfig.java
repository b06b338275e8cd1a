package io.gpumeter.model;

import java.nio.file.Path;
import java.util.Objects;

/**
 * A model directory's {@code model.json}, validated. See model-store/README.md for the contract.
 *
 * @param name served model name (the {@code model} field of requests)
 * @param directory the model directory
 * @param file TorchScript file name inside the directory
 * @param tokenizer tokenizer kind; {@code byte} is the only one so far
 * @param vocabSize logits width
 * @param contextLength maximum positions per sequence (prompt + completion)
 * @param eosId end-of-sequence token id
 * @param dtype parameter dtype of the exported file ({@code float32})
 * @param layers transformer layers (KV cache shape)
 * @param kvHeads attention heads in the KV cache
 * @param headDim size of one head
 */
public record ModelConfig(
    String name,
    Path directory,
    String file,
    String tokenizer,
    int vocabSize,
    int contextLength,
    int eosId,
    String dtype,
    int layers,
    int kvHeads,
    int headDim) {

  public ModelConfig {
    Objects.requireNonNull(name, "name");
    Objects.requireNonNull(directory, "directory");
    Objects.requireNonNull(file, "file");
    Objects.requireNonNull(tokenizer, "tokenizer");
    Objects.requireNonNull(dtype, "dtype");
    if (name.isBlank()) {
      throw new IllegalArgumentException("model name is blank in " + directory);
    }
    if (vocabSize <= 0 || contextLength <= 0 || layers <= 0 || kvHeads <= 0 || headDim <= 0) {
      throw new IllegalArgumentException(
          "model " + name + ": vocabSize, contextLength, layers, kvHeads and headDim must be > 0");
    }
    if (eosId < 0 || eosId >= vocabSize) {
      throw new IllegalArgumentException(
          "model " + name + ": eosId " + eosId + " outside vocabulary of " + vocabSize);
    }
  }
}
