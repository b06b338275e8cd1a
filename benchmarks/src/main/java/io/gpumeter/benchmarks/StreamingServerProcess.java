package io.gpumeter.benchmarks;

import io.gpumeter.batching.StepListener;
import io.gpumeter.server.GpumeterServer;
import io.gpumeter.server.ServerConfig;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * The server side of {@link StreamingThroughput} in its own JVM, so the load clients do not share
 * the server's process: starts the real server on the CPU (default settings), creates {@code
 * clients} API keys, prints {@code MODEL name}, one {@code KEY plaintext} per key and {@code PORT
 * n} on standard output, then serves until its standard input ends (the driver closes it), and
 * stops.
 *
 * <p>Uses only {@link GpumeterServer}'s public API, so the driver can run it on another build's
 * classpath (that build's jar first) to compare two builds side by side.
 *
 * <p>Usage: {@code java -cp benchmarks.jar io.gpumeter.benchmarks.StreamingServerProcess MODELS_DIR
 * CLIENTS}
 */
public final class StreamingServerProcess {
  private StreamingServerProcess() {}

  public static void main(String[] args) throws Exception {
    Path models = Path.of(args[0]);
    int clients = Integer.parseInt(args[1]);
    Path data = Files.createTempDirectory("gpumeter-streaming-server-");
    GpumeterServer server =
        GpumeterServer.start(
            ServerConfig.builder()
                .host("127.0.0.1")
                .port(0)
                .modelsDir(models)
                .dataDir(data)
                .device("cpu")
                .build(),
            StepListener.NONE);
    try {
      System.out.println("MODEL " + server.schedulers().get(0).modelName());
      for (int i = 0; i < clients; i++) {
        System.out.println(
            "KEY " + server.billing().apiKeys().create("stream-client-" + i).plaintext());
      }
      System.out.println("PORT " + server.port());
      System.out.flush();
      InputStream in = System.in;
      while (in.read() >= 0) {
        // serve until the driver closes our standard input
      }
    } finally {
      server.close();
    }
    System.exit(0);
  }
}
