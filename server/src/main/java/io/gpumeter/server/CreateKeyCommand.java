package io.gpumeter.server;

import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code create-key --account NAME}, the same as {@code key create} (kept: scripts and the README
 * use it): prints the key alone on stdout (easy to capture in a script) and the notes on stderr.
 * Only the database is started (or reached over TCP, when a server runs on the embedded folder),
 * and closed.
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
    return KeyCommand.create(spec, config, account);
  }
}
