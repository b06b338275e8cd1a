package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.Billing;
import io.gpumeter.billing.keys.ApiKeys;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;
import org.junit.jupiter.api.Test;

class MainTest {

  @Test
  void createKeyPrintsTheKeyOnceAndItAuthenticates() throws Exception {
    Path data = Path.of("target", "test-data", "main-" + System.nanoTime()).toAbsolutePath();
    Files.createDirectories(data);
    Path cache = Path.of("target", "pg-binaries").toAbsolutePath();
    Path file = data.resolve("gpumeter.properties");
    Files.writeString(file, "data.dir=" + data + "\ndb.binary_cache_dir=" + cache + "\n");
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();

    int status =
        Main.run(
            new String[] {"create-key", "--account", "cli-test", "--config", file.toString()},
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8));

    assertThat(status).isZero();
    String key = out.toString(StandardCharsets.UTF_8).trim();
    assertThat(ApiKeys.isWellFormed(key)).as(key).isTrue();
    assertThat(err.toString(StandardCharsets.UTF_8))
        .contains("cli-test")
        .contains("cannot be shown again")
        .doesNotContain(key);
    ServerConfig config = ServerConfig.load(file, java.util.Map.of(), new java.util.Properties());
    try (Billing billing = Billing.start(config.databaseConfig())) {
      Optional<ApiKeyPrincipal> p = billing.apiKeys().authenticate(key);
      assertThat(p).isPresent();
      assertThat(p.get().accountName()).isEqualTo("cli-test");
    }
  }

  @Test
  void badArgumentsAreExplained() {
    PrintStream sink = new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8);
    assertThatThrownBy(() -> Main.run(new String[] {"create-key"}, sink, sink))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("--account");
    assertThatThrownBy(() -> Main.run(new String[] {"frobnicate"}, sink, sink))
        .hasMessageContaining("unknown command 'frobnicate'");
    assertThatThrownBy(
            () -> Main.run(new String[] {"--config", "/nonexistent.properties"}, sink, sink))
        .hasMessageContaining("does not exist");
  }

  @Test
  void helpPrintsUsage() throws Exception {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    PrintStream ps = new PrintStream(out, true, StandardCharsets.UTF_8);
    assertThat(Main.run(new String[] {"--help"}, ps, ps)).isZero();
    assertThat(out.toString(StandardCharsets.UTF_8)).contains("create-key --account NAME");
  }
}
