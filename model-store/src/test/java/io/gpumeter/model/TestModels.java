package io.gpumeter.model;

import io.gpumeter.metering.StepTimerFactory;
import java.nio.file.Files;
import java.nio.file.Path;

/** The real demo model of the repository, loaded once per test JVM. */
final class TestModels {
  static final String DEMO = "demo-byte-lm";
  static final String LLAMA = "tiny-llama-bpe";

  private static ModelStore store;

  private TestModels() {}

  /** The repository's {@code models/} folder, found by walking up from the working directory. */
  static Path modelsDir() {
    Path start = Path.of("").toAbsolutePath();
    for (Path p = start; p != null; p = p.getParent()) {
      Path models = p.resolve("models");
      if (Files.isRegularFile(models.resolve(DEMO).resolve(ModelConfigs.FILE_NAME))) {
        return models;
      }
    }
    throw new IllegalStateException(
        "no models/"
            + DEMO
            + "/model.json in "
            + start
            + " or above; run tools/train_demo_model.py");
  }

  static Path demoDir() {
    return modelsDir().resolve(DEMO);
  }

  /** The store over the repository's models on the CPU with host timers, shared by tests. */
  static synchronized ModelStore store() {
    if (store == null) {
      store = ModelStore.open(modelsDir(), "cpu", StepTimerFactory.hostOnly());
    }
    return store;
  }

  static DjlLanguageModel demo() {
    return (DjlLanguageModel) store().get(DEMO).orElseThrow().model();
  }

  static int argmax(float[] v) {
    int best = 0;
    for (int i = 1; i < v.length; i++) {
      if (v[i] > v[best]) {
        best = i;
      }
    }
    return best;
  }

  static float maxAbsDiff(float[] a, float[] b) {
    float d = 0;
    for (int i = 0; i < a.length; i++) {
      d = Math.max(d, Math.abs(a[i] - b[i]));
    }
    return d;
  }
}
