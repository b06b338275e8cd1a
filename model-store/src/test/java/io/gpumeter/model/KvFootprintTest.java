package io.gpumeter.model;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;

class KvFootprintTest {

  private static ModelConfig shape(String dtype, int layers, int kvHeads, int headDim) {
    return new ModelConfig(
        "m", Path.of("."), "model.pt", "byte", 257, 1024, 256, dtype, layers, kvHeads, headDim);
  }

  @Test
  void bytesPerTokenIsLayersTimesKvHeadsTimesHeadDimTimesKeyAndValueTimesDtypeBytes() {
    assertThat(KvFootprint.bytesPerToken(shape("float32", 4, 4, 32))).isEqualTo(4096);
    assertThat(KvFootprint.bytesPerToken(shape("float16", 80, 8, 128)))
        .isEqualTo(80L * 8 * 128 * 2 * 2);
  }

  @Test
  void anUnknownDtypeIsNamed() {
    assertThatThrownBy(() -> KvFootprint.bytesPerToken(shape("int3", 1, 1, 1)))
        .isInstanceOf(ModelException.class)
        .hasMessageContaining("int3");
  }
}
