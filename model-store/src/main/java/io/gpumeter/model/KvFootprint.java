package io.gpumeter.model;

/**
 * How many KV-cache bytes one cached token of a model takes on its device, from the model's shape
 * in {@code model.json}: {@code layers × kvHeads × headDim × 2 (a key and a value) × bytes per
 * element of the dtype}. The demo model (4 layers, 4 KV heads, head dim 32, float32) takes 4 096
 * bytes per token.
 */
public final class KvFootprint {
  private KvFootprint() {}

  /**
   * Bytes of KV cache per cached token.
   *
   * @throws ModelException if the dtype is not one this build knows the size of
   */
  public static long bytesPerToken(ModelConfig config) {
    return (long) config.layers()
        * config.kvHeads()
        * config.headDim()
        * 2L
        * dtypeBytes(config.dtype(), config.name());
  }

  /** Bytes of one element of {@code dtype}. */
  static int dtypeBytes(String dtype, String model) {
    return switch (dtype) {
      case "float32" -> 4;
      case "float16", "bfloat16" -> 2;
      default -> throw new ModelException("model " + model + ": unknown KV dtype '" + dtype + "'");
    };
  }
}
