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
  void keyCommandsCreateListRotateAndRevoke() throws Exception {
    Path data = Path.of("target", "test-data", "main-keys-" + System.nanoTime()).toAbsolutePath();
    Files.createDirectories(data);
    Path cache = Path.of("target", "pg-binaries").toAbsolutePath();
    Path file = data.resolve("gpumeter.properties");
    Files.writeString(
        file, "data.dir=" + data + "\ndb.binary_cache_dir=" + cache + "\nauth.key_cache_ttl=7s\n");
    String cfg = file.toString();

    Cli created = cli("--config", cfg, "key", "create", "--account", "cli-keys");
    assertThat(created.status()).as(created.toString()).isZero();
    String key = created.out().trim();
    assertThat(ApiKeys.isWellFormed(key)).as(created.toString()).isTrue();
    Cli other =
        cli("key", "create", "--account", "cli-other", "--scope", "account_admin", "--config", cfg);
    assertThat(other.status()).as(other.toString()).isZero();
    assertThat(other.err()).contains("scope account_admin");
    Cli badScope = cli("key", "create", "--account", "cli-x", "--scope", "root", "--config", cfg);
    assertThat(badScope.status()).as(badScope.toString()).isNotZero();
    assertThat(badScope.err()).contains("--scope");
    assertThat(cli("key", "list", "--account", "cli-other", "--config", cfg).out())
        .contains("\taccount_admin\t-");
    Cli labelled =
        cli("key", "create", "--account", "cli-label", "--label", " ci runner ", "--config", cfg);
    assertThat(labelled.status()).as(labelled.toString()).isZero();
    assertThat(labelled.err()).contains("label 'ci runner'");
    assertThat(cli("key", "list", "--account", "cli-label", "--config", cfg).out())
        .endsWith("\tinference\tci runner\n");
    Cli badLabel =
        cli("key", "create", "--account", "cli-label", "--label", "x".repeat(201), "--config", cfg);
    assertThat(badLabel.status()).as(badLabel.toString()).isNotZero();
    assertThat(badLabel.err()).contains("--label");
    assertThat(cli("key", "list", "--account", "cli-label", "--config", cfg).out().split("\n"))
        .as("the refused label created no key")
        .hasSize(2);

    Cli listed = cli("key", "list", "--account", "cli-keys", "--config", cfg);
    assertThat(listed.status()).as(listed.toString()).isZero();
    String[] lines = listed.out().strip().split("\n");
    assertThat(lines).hasSize(2);
    assertThat(lines[0]).isEqualTo("ID\tPREFIX\tACCOUNT\tCREATED\tREVOKED\tSCOPE\tLABEL");
    String[] row = lines[1].split("\t");
    assertThat(row[1]).isEqualTo(key.substring(0, ApiKeys.PREFIX_LENGTH));
    assertThat(row[2]).isEqualTo("cli-keys");
    assertThat(row[4]).isEqualTo("-");
    assertThat(row[5]).isEqualTo("inference");
    assertThat(listed.out()).doesNotContain(key.substring(ApiKeys.PREFIX_LENGTH));
    String id = row[0];
    assertThat(cli("key", "list", "--config", cfg).out().strip().split("\n")).hasSize(4);

    Cli rotated = cli("key", "rotate", id, "--config", cfg);
    assertThat(rotated.status()).as(rotated.toString()).isZero();
    String newKey = rotated.out().trim();
    assertThat(ApiKeys.isWellFormed(newKey)).as(rotated.toString()).isTrue();
    assertThat(newKey).isNotEqualTo(key);
    assertThat(rotated.err())
        .contains("Rotated key " + id)
        .contains("cannot be shown again")
        .contains("at most 7 s more")
        .doesNotContain(newKey);

    Cli again = cli("key", "revoke", id, "--config", cfg);
    assertThat(again.status()).as(again.toString()).isEqualTo(1);
    assertThat(again.err()).contains("API key " + id + " is already revoked");
    assertThat(again.out()).isEmpty();
    Cli unknown = cli("key", "rotate", "999999", "--config", cfg);
    assertThat(unknown.status()).as(unknown.toString()).isEqualTo(1);
    assertThat(unknown.err()).contains("no API key has id 999999");

    String[] after = cli("key", "list", "--account", "cli-keys", "--config", cfg).out().split("\n");
    assertThat(after).hasSize(3);
    assertThat(after[1].split("\t")[4]).isNotEqualTo("-"); // the old key: revoked
    String newId = after[2].split("\t")[0];
    Cli revoked = cli("key", "revoke", newId, "--config", cfg);
    assertThat(revoked.status()).as(revoked.toString()).isZero();
    assertThat(revoked.err()).contains("Revoked API key").contains("cli-keys");

    ServerConfig config = ServerConfig.load(file, java.util.Map.of(), new java.util.Properties());
    try (Billing billing = Billing.start(config.databaseConfig())) {
      assertThat(billing.apiKeys().authenticate(key)).isEmpty();
      assertThat(billing.apiKeys().authenticate(newKey)).isEmpty();
    }

    assertError(cli("key"), "Missing subcommand");
    assertError(cli("key", "revoke"), "Missing required parameter: 'ID'");
    assertError(cli("key", "revoke", "x1"), "'x1'");
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
      {"key", "--help"},
      {"key", "list", "--help"},
      {"key", "revoke", "-h"},
      {"key", "rotate", "--help"},
      {"key", "create", "--help"},
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
