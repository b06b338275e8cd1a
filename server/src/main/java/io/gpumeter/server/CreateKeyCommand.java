package io.gpumeter.server;

import io.gpumeter.billing.BillingAdmin;
import io.gpumeter.billing.CreatedApiKey;
import java.io.PrintWriter;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code create-key --account NAME}: prints the key alone on stdout (easy to capture in a script)
 * and the notes on stderr. Only the database is started (or reached over TCP, when a server runs on
 * the embedded folder), and closed.
 */
@Command(
    name = "create-key",
    mixinStandardHelpOptions = true,
    versionProvider = Main.Version.class,
    description = {
      "Creates an API key for the account (created if new) and prints it once.",
      "Works while the server runs: with the embedded database it connects to the running"
          + " server's PostgreSQL."
    })
final class CreateKeyCommand implements Callable<Integer> {
  @Spec CommandSpec spec;

  @Mixin ConfigOption config;

  @Option(
      names = "--account",
      paramLabel = "NAME",
      required = true,
      description = "The account's name (at most 200 characters).")
  String account;

  @Override
  public Integer call() throws Exception {
    if (account.isBlank()) {
      throw new ParameterException(spec.commandLine(), "--account must not be blank");
    }
    ServerConfig settings = config.load();
    PrintWriter out = spec.commandLine().getOut();
    PrintWriter err = spec.commandLine().getErr();
    try (BillingAdmin admin = BillingAdmin.open(settings.toolDatabaseConfig())) {
      CreatedApiKey key = admin.createKey(account);
      err.println(
          "Created API key "
              + key.prefix()
              + "... (id "
              + key.keyId()
              + ") for account '"
              + key.accountName()
              + "' (id "
              + key.accountId()
              + "):");
      err.flush();
      out.println(key.plaintext());
      out.flush();
      err.println(
          "Store it now: it is shown only this once and cannot be shown again (only its hash"
              + " is kept).");
      err.flush();
    }
    return 0;
  }
}
