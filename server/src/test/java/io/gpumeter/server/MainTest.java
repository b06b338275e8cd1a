package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

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

    // --config before the command applies to it too; --account=NAME works as well
    Cli second = cli("--config", file.toString(), "create-key", "--account=cli-test-2");
    assertThat(second.status()).as(second.toString()).isZero();
    String key2 = second.out().trim();
    assertThat(ApiKeys.isWellFormed(key2)).as(second.toString()).isTrue();
    assertThat(key2).isNotEqualTo(key);

    ServerConfig config = ServerConfig.load(file, java.util.Map.of(), new java.util.Properties());
    try (Billing billing = Billing.start(config.databaseConfig())) {
      Optional<ApiKeyPrincipal> p = billing.apiKeys().authenticate(key);
      assertThat(p).isPresent();
      assertThat(p.get().accountName()).isEqualTo("cli-test");
      assertThat(billing.apiKeys().authenticate(key2).map(ApiKeyPrincipal::accountName))
          .contains("cli-test-2");
    }
  }

  @Test
  void helpWorksOnEveryCommand() {
    String[][] asks = {
      {"--help"},
      {"-h"},
      {"help"},
      {"serve", "--help"},
      {"create-key", "--help"},
      {"reconcile", "-h"},
      {"help", "create-key"},
    };
    for (String[] args : asks) {
      Cli r = cli(args);
      assertThat(r.status()).as(r.toString()).isZero();
      assertThat(r.out()).as(r.toString()).contains("Usage:").contains("--config=FILE");
      assertThat(r.err()).as(r.toString()).isEmpty();
    }
    assertThat(cli("--help").out())
        .contains("serve")
        .contains("create-key --account demo")
        .contains("reconcile --from ");
    assertThat(cli("create-key", "--help").out()).contains("--account=NAME");
    assertThat(cli("reconcile", "--help").out())
        .contains("--from=ISO")
        .contains("--to=ISO")
        .contains("3   a line drifts");
  }

  @Test
  void versionIsPrinted() {
    Cli r = cli("--version");
    assertThat(r.status()).isZero();
    assertThat(r.out()).startsWith("gpumeter-server ");
    assertThat(cli("create-key", "--version").out()).startsWith("gpumeter-server ");
  }

  @Test
  void unknownOptionsAreErrorsWithStatus2() {
    String[][] bad = {
      {"--frob"},
      {"serve", "--frob"},
      {"create-key", "--account", "x", "--frob"},
      {"reconcile", "--from", "2026-01-31T12:00:00Z", "--to", "2026-01-31T13:00:00Z", "--frob"},
    };
    for (String[] args : bad) {
      Cli r = cli(args);
      assertThat(r.status()).as(r.toString()).isEqualTo(2);
      assertThat(r.err()).as(r.toString()).contains("Unknown option: '--frob'");
      assertThat(r.out()).as(r.toString()).isEmpty();
    }
  }

  @Test
  void badArgumentsAreExplainedWithStatus2() throws Exception {
    assertError(cli("create-key"), "Missing required option: '--account=NAME'");
    assertError(cli("create-key", "--account", " "), "--account must not be blank");
    assertError(cli("frobnicate"), "'frobnicate'");
    assertError(cli("--config", "/nonexistent.properties"), "does not exist");
    assertError(
        cli("create-key", "--account", "x", "--config", "/nonexistent.properties"),
        "config file /nonexistent.properties does not exist");
    assertError(cli("reconcile", "--from", "2026-01-31T12:00:00Z"), "'--to=ISO'");
    assertError(
        cli("reconcile", "--from", "yesterday", "--to", "2026-01-31T13:00:00Z"),
        "must be an ISO-8601 time with an offset");
    assertError(
        cli("reconcile", "--from", "2026-01-31T13:00:00Z", "--to", "2026-01-31T12:00:00+01:00"),
        "must be after --from");
    // a bad setting stops the command before it opens the database, naming key and source
    Path file = Files.createTempFile("gpumeter-bad", ".properties");
    try {
      Files.writeString(file, "port=70000\n");
      assertError(
          cli("create-key", "--account", "x", "--config", file.toString()),
          "invalid setting port='70000' (from file " + file + ")");
      assertError(
          cli("--config", file.toString(), "create-key", "--account", "x"),
          "invalid setting port='70000' (from file " + file + ")");
      // an @ argument is a value, not an argument file to expand (that would give --help)
      Files.writeString(file, "--help\n");
      assertError(
          cli("create-key", "--account", "@" + file, "--config", "/nonexistent.properties"),
          "config file /nonexistent.properties does not exist");
    } finally {
      Files.delete(file);
    }
  }

  private static void assertError(Cli r, String message) {
    assertThat(r.status()).as(r.toString()).isEqualTo(2);
    assertThat(r.err()).as(r.toString()).contains(message);
    assertThat(r.out()).as(r.toString()).isEmpty();
  }

  record Cli(int status, String out, String err) {}

  private static Cli cli(String... args) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int status =
        Main.run(
            args,
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8));
    return new Cli(
        status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }
}
