package io.gpumeter.server;

import io.gpumeter.batching.StepListener;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;

/**
 * {@code serve}, the default command: runs the server until SIGTERM or Ctrl-C.
 *
 * <p>Nobody but the owner stops the database: the embedded PostgreSQL registers no JVM shutdown
 * hook of its own, so at SIGTERM this command's hook closes the server, which drains the ledger and
 * only then stops PostgreSQL.
 */
@Command(
    name = "serve",
    mixinStandardHelpOptions = true,
    versionProvider = Main.Version.class,
    description = {
      "Runs the server until stopped (SIGTERM or Ctrl-C shut it down gracefully).",
      "The default command: `gpumeter-server [--config FILE]` does the same."
    })
final class ServeCommand implements Callable<Integer> {
  @Mixin ConfigOption config;

  @Override
  public Integer call() throws Exception {
    serve(config.load());
    return 0;
  }

  /** Starts the server and blocks until the shutdown hook has closed it. */
  static void serve(ServerConfig config) throws InterruptedException {
    GpumeterServer server = GpumeterServer.start(config, StepListener.NONE);
    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  try {
                    server.close();
                  } finally {
                    stopped.countDown();
                  }
                },
                "gpumeter-shutdown"));
    stopped.await();
  }
}
