package io.gpumeter.benchmarks;

import io.gpumeter.server.GpumeterServer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;

/** A server {@link ServerThroughput} started, with its temporary data folder and API keys. */
record Started(
    GpumeterServer server, Path dataDir, List<String> keys, String model, StepStats stats)
    implements AutoCloseable {
  @Override
  public void close() throws IOException {
    server.close();
    deleteTree(dataDir);
  }

  private static void deleteTree(Path dir) throws IOException {
    if (!Files.exists(dir)) {
      return;
    }
    try (Stream<Path> paths = Files.walk(dir)) {
      for (Path p : paths.sorted(Comparator.reverseOrder()).toList()) {
        Files.deleteIfExists(p);
      }
    }
  }
}
