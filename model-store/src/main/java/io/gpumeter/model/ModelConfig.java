package io.gpumeter.model;

import java.nio.file.Path;
import java.util.List;
import java.util.Objects;

/**
 * A model directory's {@code model.json}, validated. See model-store/README.md for the contract.
 *
 * @param name served model name (the {@code model} field of requests)
 * @param directory the model directory
 * @param file TorchScript file name inside the directory
 * @param tokenizer tokenizer kind: {@code byte}, or {@code hf} ({@code tokenizer.json} in the
 *     directory)
 * @param vocabSize logits width
 * @param contextLength maximum positions per sequence (prompt + completion)
 * @param eosId end-of-sequence token id (the first of {@code eosIds})
 * @param dtype parameter dtype of the exported file ({@code float32})
 * @param layers transformer layers (KV cache shape)
 * @param kvHeads attention heads in the KV cache
 * @param headDim size of one head
 * @param eosIds every id that ends a sequence, {@code eosId} first; the scheduler stops on any
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
    int headDim,
    List<Integer> eosIds) {

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
    eosIds = List.copyOf(eosIds);
    if (eosIds.isEmpty() || eosIds.get(0) != eosId) {
      throw new IllegalArgumentException(
          "model " + name + ": eosIds " + eosIds + " must start with eosId " + eosId);
    }
    for (int id : eosIds) {
      if (id < 0 || id >= vocabSize) {
        throw new IllegalArgumentException(
            "model " + name + ": eos id " + id + " outside vocabulary of " + vocabSize);
      }
    }
  }

  /** A config with the single end-of-sequence id {@code eosId}. */
  public ModelConfig(
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
    this(
        name,
        directory,
        file,
        tokenizer,
        vocabSize,
        contextLength,
        eosId,
        dtype,
        layers,
        kvHeads,
        headDim,
        List.of(eosId));
  }

  /** Whether {@code id} ends a sequence. */
  public boolean isEos(int id) {
    return eosIds.contains(id);
  }
}
