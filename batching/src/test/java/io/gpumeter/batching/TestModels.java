package io.gpumeter.batching;

import io.gpumeter.metering.StepTimerFactory;
import io.gpumeter.model.ModelStore;
import java.nio.file.Files;
import java.nio.file.Path;

/** Loads the real bundled model once per JVM (DJL + TorchScript), for scheduler tests. */
final class TestModels {
  private static ModelStore store;

  private TestModels() {}

  static synchronized ModelStore store() {
    if (store == null) {
      store = ModelStore.open(modelsDir(), "cpu", StepTimerFactory.hostOnly());
      Runtime.getRuntime().addShutdownHook(new Thread(store::close));
    }
    return store;
  }

  static Path modelsDir() {
    Path dir = Path.of("").toAbsolutePath();
    while (dir != null) {
      Path candidate = dir.resolve("models");
      if (Files.isDirectory(candidate) && Files.exists(dir.resolve("mvnw"))) {
        return candidate;
      }
      dir = dir.getParent();
    }
    throw new IllegalStateException("models/ not found above " + Path.of("").toAbsolutePath());
  }
}
