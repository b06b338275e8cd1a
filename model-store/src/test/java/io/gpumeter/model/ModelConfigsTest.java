package io.gpumeter.model;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ModelConfigsTest {
  private static final String VALID =
      """
      {"name": "m1", "file": "model.pt", "tokenizer": "byte", "vocabSize": 257,
       "contextLength": 1024, "eosId": 256, "dtype": "float32", "layers": 4, "kvHeads": 4,
       "headDim": 32}
      """;

  @TempDir Path dir;

  private Path write(String json) throws IOException {
    Files.writeString(dir.resolve("model.json"), json);
    if (!Files.exists(dir.resolve("model.pt"))) {
      Files.write(dir.resolve("model.pt"), new byte[] {0});
    }
    return dir;
  }

  @Test
  void readsTheRepositoryDemoModel() {
    ModelConfig c = ModelConfigs.read(TestModels.demoDir());
    assertThat(c.name()).isEqualTo("demo-byte-lm");
    assertThat(c.file()).isEqualTo("model.pt");
    assertThat(c.tokenizer()).isEqualTo("byte");
    assertThat(c.vocabSize()).isEqualTo(257);
    assertThat(c.eosId()).isEqualTo(256);
    assertThat(c.contextLength()).isEqualTo(1024);
    assertThat(c.dtype()).isEqualTo("float32");
    assertThat(c.kvHeads() * c.headDim()).isPositive();
  }

  @Test
  void readsAValidConfig() throws IOException {
    ModelConfig c = ModelConfigs.read(write(VALID));
    assertThat(c)
        .isEqualTo(
            new ModelConfig("m1", dir, "model.pt", "byte", 257, 1024, 256, "float32", 4, 4, 32));
  }

  @Test
  void missingFileIsNamed() {
    assertThatThrownBy(() -> ModelConfigs.read(dir))
        .isInstanceOf(ModelException.class)
        .hasMessageContaining(dir.resolve("model.json").toString())
        .hasMessageContaining("not found");
  }

  @Test
  void invalidJsonIsNamed() throws IOException {
    assertThatThrownBy(() -> ModelConfigs.read(write("{\"name\": ")))
        .isInstanceOf(ModelException.class)
        .hasMessageContaining("model.json")
        .hasMessageContaining("not valid JSON");
    assertThatThrownBy(() -> ModelConfigs.read(write("[1, 2]")))
        .hasMessageContaining("expected a JSON object");
  }

  @Test
  void missingFieldIsNamed() throws IOException {
    assertThatThrownBy(() -> ModelConfigs.read(write(VALID.replace("\"eosId\": 256,", ""))))
        .isInstanceOf(ModelException.class)
        .hasMessageContaining("model.json")
        .hasMessageContaining("missing field 'eosId'");
  }

  @Test
  void wrongTypesAreNamed() throws IOException {
    assertThatThrownBy(() -> ModelConfigs.read(write(VALID.replace("1024", "\"1024\""))))
        .hasMessageContaining("field 'contextLength' must be an integer");
    assertThatThrownBy(
            () -> ModelConfigs.read(write(VALID.replace("\"layers\": 4", "\"layers\": 4.5"))))
        .hasMessageContaining("field 'layers' must be an integer");
    assertThatThrownBy(() -> ModelConfigs.read(write(VALID.replace("\"m1\"", "7"))))
        .hasMessageContaining("field 'name' must be a string");
    assertThatThrownBy(
            () -> ModelConfigs.read(write(VALID.replace("\"headDim\": 32", "\"headDim\": 0"))))
        .hasMessageContaining("field 'headDim' must be > 0");
  }

  @Test
  void unknownFieldIsRejected() throws IOException {
    assertThatThrownBy(() -> ModelConfigs.read(write(VALID.replace("\"layers\"", "\"layer\""))))
        .hasMessageContaining("unknown field 'layer'");
  }

  @Test
  void valuesOutsideTheContractAreRejected() throws IOException {
    assertThatThrownBy(() -> ModelConfigs.read(write(VALID.replace("256", "300"))))
        .hasMessageContaining("field 'eosId' is 300");
    assertThatThrownBy(
            () -> ModelConfigs.read(write(VALID.replace("\"eosId\": 256", "\"eosId\": 10"))))
        .hasMessageContaining("field 'eosId' is 10, a byte id");
    assertThatThrownBy(() -> ModelConfigs.read(write(VALID.replace("\"byte\"", "\"bpe\""))))
        .hasMessageContaining("field 'tokenizer' is 'bpe'");
    assertThatThrownBy(() -> ModelConfigs.read(write(VALID.replace("float32", "int8"))))
        .hasMessageContaining("field 'dtype' is 'int8'");
    // 2-byte dtypes are read; whether the engine can serve one is DjlLanguageModel's (DtypeTest)
    assertThat(ModelConfigs.read(write(VALID.replace("float32", "float16"))).dtype())
        .isEqualTo("float16");
    assertThat(ModelConfigs.read(write(VALID.replace("float32", "bfloat16"))).dtype())
        .isEqualTo("bfloat16");
    assertThatThrownBy(() -> ModelConfigs.read(write(VALID.replace("model.pt", "other.pt"))))
        .hasMessageContaining("field 'file' is 'other.pt'");
    assertThatThrownBy(() -> ModelConfigs.read(write(VALID.replace("\"m1\"", "\"a b\""))))
        .hasMessageContaining("field 'name'");
  }
}
