package io.gpumeter.server;

import io.gpumeter.batching.StepListener;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * One real server for the console's test classes ({@link ConsoleSessionTest}, {@link
 * ConsoleBrowserTest}): started by the first of them that runs, kept in JUnit's root store and
 * closed when the test run ends, so the console's checks pay for one server start (its embedded
 * PostgreSQL and its migrations were most of the browser test's time in CI, server/README.md
 * "Building the console"). Only the demo model is loaded. The classes keep apart by account name,
 * and the browser test prices its requests in EUR so the session test's USD accounts stay unpriced
 * whichever class runs first.
 */
final class ConsoleTestServer implements BeforeAllCallback {
  static final String TOKEN = "admin-token-for-console-tests-42";
  private static final ExtensionContext.Namespace NAMESPACE =
      ExtensionContext.Namespace.create(ConsoleTestServer.class);
  private static volatile GpumeterServer server;
  private static volatile long startMillis;

  @Override
  public void beforeAll(ExtensionContext context) {
    server =
        context
            .getRoot()
            .getStore(NAMESPACE)
            .getOrComputeIfAbsent(GpumeterServer.class, k -> start(), GpumeterServer.class);
  }

  /**
   * The shared server; the class must be annotated {@code @ExtendWith(ConsoleTestServer.class)}.
   */
  static GpumeterServer server() {
    if (server == null) {
      throw new IllegalStateException("@ExtendWith(ConsoleTestServer.class) is missing");
    }
    return server;
  }

  /** How long the shared server took to start, for the timing lines. */
  static long startMillis() {
    return startMillis;
  }

  private static GpumeterServer start() {
    long t0 = System.nanoTime();
    try {
      Path models =
          Files.createDirectories(
              Path.of("target", "test-data", "console-models-" + System.nanoTime())
                  .toAbsolutePath());
      Files.createSymbolicLink(
          models.resolve("demo-byte-lm"), TestServers.repoRoot().resolve("models/demo-byte-lm"));
      GpumeterServer s =
          GpumeterServer.start(
              TestServers.config("console")
                  .modelsDir(models)
                  .set("admin.token", TOKEN)
                  .set("auth.key_cache_ttl", "60s")
                  .set("auth.max_failures", "1000")
                  .build(),
              StepListener.NONE);
      startMillis = (System.nanoTime() - t0) / 1_000_000;
      return s;
    } catch (Exception e) {
      throw new IllegalStateException("the console tests' server did not start", e);
    }
  }
}
