package io.gpumeter.server;

import io.gpumeter.billing.ApiKeyInfo;
import io.gpumeter.billing.ApiKeyStateException;
import io.gpumeter.billing.BillingAdmin;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.KeyScope;
import io.gpumeter.billing.RotatedApiKey;
import io.gpumeter.billing.keys.ApiKeys;
import java.io.PrintWriter;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.ExitCode;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code key create|list|revoke|rotate}: API keys from the command line. Each opens only the
 * database ({@link BillingAdmin}; over TCP when a server runs on the embedded folder), and closes
 * it. Secrets (of created and rotated keys) go alone on stdout, once; notes go to stderr. A key id
 * that does not exist, or is already revoked, is exit status 1 with the reason on stderr.
 *
 * <p>A revocation made here reaches a running server through its database: the server accepts a key
 * it has cached for at most {@code auth.key_cache_ttl} more. {@code POST /admin/keys/{id}/revoke}
 * on that server takes effect there at once.
 */
@Command(
    name = "key",
    mixinStandardHelpOptions = true,
    versionProvider = Main.Version.class,
    description = "API keys: create, list, revoke, rotate. Secrets are printed once, never listed.",
    subcommands = {
      KeyCommand.Create.class,
      KeyCommand.ListKeys.class,
      KeyCommand.Revoke.class,
      KeyCommand.Rotate.class
    })
final class KeyCommand implements Callable<Integer> {
  @Spec CommandSpec spec;

  @Mixin ConfigOption config;

  /** Without a subcommand: the usage, and exit status 2. */
  @Override
  public Integer call() {
    throw new ParameterException(
        spec.commandLine(), "Missing subcommand: one of create, list, revoke, rotate");
  }

  /** Prints a created key: the secret alone on stdout, the notes on stderr. */
  static void printCreated(CommandSpec spec, CreatedApiKey key, String verb) {
    PrintWriter out = spec.commandLine().getOut();
    PrintWriter err = spec.commandLine().getErr();
    err.println(
        verb
            + " API key "
            + key.prefix()
            + "... (id "
            + key.keyId()
            + ") for account '"
            + key.accountName()
            + "' (id "
            + key.accountId()
            + "), scope "
            + key.scope().dbName()
            + (key.label() == null ? "" : ", label '" + key.label() + "'")
            + ":");
    err.flush();
    out.println(key.plaintext());
    out.flush();
    err.println(
        "Store it now: it is shown only this once and cannot be shown again (only its hash"
            + " is kept).");
    err.flush();
  }

  /** An unknown or already revoked key: the reason on stderr, exit status 1. */
  static int refused(CommandSpec spec, ApiKeyStateException e) {
    spec.commandLine().getErr().println("gpumeter: " + e.getMessage());
    return ExitCode.SOFTWARE;
  }

  @Command(
      name = "create",
      mixinStandardHelpOptions = true,
      versionProvider = Main.Version.class,
      description = {
        "Creates an API key for the account (created if new) and prints it once.",
        "Same as `create-key`."
      })
  static final class Create implements Callable<Integer> {
    @Spec CommandSpec spec;

    @Mixin ConfigOption config;

    @Option(
        names = "--account",
        paramLabel = "NAME",
        required = true,
        description = "The account's name (at most 200 characters).")
    String account;

    @Option(
        names = "--scope",
        paramLabel = "SCOPE",
        defaultValue = "inference",
        description =
            "What the key may read through the usage API: inference (its own usage, the"
                + " default) or account_admin (every key of its account).")
    String scope;

    @Option(
        names = "--label",
        paramLabel = "TEXT",
        description =
            "The key's name shown in lists (1-200 characters, no control characters; default"
                + " none).")
    String label;

    @Override
    public Integer call() throws Exception {
      KeyScope s;
      try {
        s = KeyScope.parse(scope);
      } catch (IllegalArgumentException e) {
        throw new ParameterException(spec.commandLine(), "--scope: " + e.getMessage());
      }
      if (label != null) {
        try {
          ApiKeys.validateLabel(label);
        } catch (IllegalArgumentException e) {
          throw new ParameterException(spec.commandLine(), "--label: " + e.getMessage());
        }
      }
      return create(spec, config, account, s, label);
    }
  }

  /** {@code key create} and {@code create-key}. */
  static int create(CommandSpec spec, ConfigOption config, String account) throws Exception {
    return create(spec, config, account, KeyScope.INFERENCE);
  }

  /** {@code key create --scope SCOPE}. */
  static int create(CommandSpec spec, ConfigOption config, String account, KeyScope scope)
      throws Exception {
    return create(spec, config, account, scope, null);
  }

  /** {@code key create --scope SCOPE --label TEXT}. */
  static int create(
      CommandSpec spec, ConfigOption config, String account, KeyScope scope, String label)
      throws Exception {
    if (account.isBlank()) {
      throw new ParameterException(spec.commandLine(), "--account must not be blank");
    }
    ServerConfig settings = config.load();
    try (BillingAdmin admin = BillingAdmin.open(settings.toolDatabaseConfig())) {
      printCreated(spec, admin.createKey(account, scope, label), "Created");
    }
    return 0;
  }

  @Command(
      name = "list",
      mixinStandardHelpOptions = true,
      versionProvider = Main.Version.class,
      description = {
        "Lists API keys (all, or one account's), oldest first: id, prefix, account, created and"
            + " revoked time, scope, label. Never the secret."
      })
  static final class ListKeys implements Callable<Integer> {
    @Spec CommandSpec spec;

    @Mixin ConfigOption config;

    @Option(names = "--account", paramLabel = "NAME", description = "Only this account's keys.")
    String account;

    @Override
    public Integer call() throws Exception {
      if (account != null && account.isBlank()) {
        throw new ParameterException(spec.commandLine(), "--account must not be blank");
      }
      ServerConfig settings = config.load();
      List<ApiKeyInfo> keys;
      try (BillingAdmin admin = BillingAdmin.open(settings.toolDatabaseConfig())) {
        keys = admin.listKeys(account);
      }
      PrintWriter out = spec.commandLine().getOut();
      out.println(table(keys));
      out.flush();
      return 0;
    }

    /** Tab-separated, with a header line; times in ISO-8601 UTC, {@code -} when not revoked. */
    static String table(List<ApiKeyInfo> keys) {
      StringBuilder sb = new StringBuilder("ID\tPREFIX\tACCOUNT\tCREATED\tREVOKED\tSCOPE\tLABEL");
      for (ApiKeyInfo k : keys) {
        sb.append('\n')
            .append(k.keyId())
            .append('\t')
            .append(k.prefix())
            .append('\t')
            .append(k.accountName())
            .append('\t')
            .append(k.createdAt())
            .append('\t')
            .append(k.revokedAt() == null ? "-" : k.revokedAt().toString())
            .append('\t')
            .append(k.scope().dbName())
            .append('\t')
            .append(k.label() == null ? "-" : k.label());
      }
      return sb.toString();
    }
  }

  @Command(
      name = "revoke",
      mixinStandardHelpOptions = true,
      versionProvider = Main.Version.class,
      description = {
        "Revokes an API key at once in the database. A running server that has the key cached",
        "accepts it for at most auth.key_cache_ttl more; POST /admin/keys/ID/revoke on that",
        "server takes effect there at once."
      })
  static final class Revoke implements Callable<Integer> {
    @Spec CommandSpec spec;

    @Mixin ConfigOption config;

    @Parameters(index = "0", paramLabel = "ID", description = "The key's id (see `key list`).")
    long id;

    @Override
    public Integer call() throws Exception {
      ServerConfig settings = config.load();
      ApiKeyInfo revoked;
      try (BillingAdmin admin = BillingAdmin.open(settings.toolDatabaseConfig())) {
        revoked = admin.revokeKey(id);
      } catch (ApiKeyStateException e) {
        return refused(spec, e);
      }
      PrintWriter err = spec.commandLine().getErr();
      err.println(
          "Revoked API key "
              + revoked.prefix()
              + "... (id "
              + revoked.keyId()
              + ") of account '"
              + revoked.accountName()
              + "' at "
              + revoked.revokedAt()
              + ". A running server that has it cached accepts it for at most "
              + settings.keyCacheTtl().toSeconds()
              + " s more (auth.key_cache_ttl).");
      err.flush();
      return 0;
    }
  }

  @Command(
      name = "rotate",
      mixinStandardHelpOptions = true,
      versionProvider = Main.Version.class,
      description = {
        "Creates a new API key for the same account, prints it once, and revokes the old key",
        "at once (one transaction; no grace period: for a gradual switch, `key create` a second",
        "key and `key revoke` the first later)."
      })
  static final class Rotate implements Callable<Integer> {
    @Spec CommandSpec spec;

    @Mixin ConfigOption config;

    @Parameters(index = "0", paramLabel = "ID", description = "The key's id (see `key list`).")
    long id;

    @Override
    public Integer call() throws Exception {
      ServerConfig settings = config.load();
      RotatedApiKey rotated;
      try (BillingAdmin admin = BillingAdmin.open(settings.toolDatabaseConfig())) {
        rotated = admin.rotateKey(id);
      } catch (ApiKeyStateException e) {
        return refused(spec, e);
      }
      printCreated(spec, rotated.created(), "Rotated key " + id + " into");
      spec.commandLine()
          .getErr()
          .println(
              "Key "
                  + id
                  + " ("
                  + rotated.revoked().prefix()
                  + "...) is revoked; a running server that has it cached accepts it for at most "
                  + settings.keyCacheTtl().toSeconds()
                  + " s more (auth.key_cache_ttl).");
      spec.commandLine().getErr().flush();
      return 0;
    }
  }
}
