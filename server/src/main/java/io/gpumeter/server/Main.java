package io.gpumeter.server;

import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.Billing;
import io.gpumeter.billing.CreatedApiKey;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Command line: {@code serve} (the default) runs the server until SIGTERM/SIGINT; {@code create-key
 * --account NAME} starts only the billing database, creates a key and prints it once. Both take
 * {@code --config FILE}; see server/README.md for the settings.
 */
public final class Main {
  private static final Logger log = LoggerFactory.getLogger(Main.class);

  static final String USAGE =
      String.join(
          "\n",
          "Usage:",
          "  java -jar gpumeter-server.jar [serve] [--config FILE]",
          "      Runs the server until stopped (SIGTERM or Ctrl-C shut it down gracefully).",
          "  java -jar gpumeter-server.jar create-key --account NAME [--config FILE]",
          "      Creates an API key for the account (created if new) and prints it once.",
          "",
          "Settings come from the --config properties file, then GPUMETER_* environment",
          "variables, then -Dgpumeter.* system properties (see server/README.md).");

  private Main() {}

  public static void main(String[] args) {
    int status;
    try {
      status = run(args, System.out, System.err);
    } catch (IllegalArgumentException e) {
      System.err.println("gpumeter: " + e.getMessage());
      status = 2;
    } catch (Exception e) {
      log.error("gpumeter failed", e);
      System.err.println("gpumeter: " + e.getMessage());
      status = 1;
    }
    if (status != 0) {
      System.exit(status);
    }
  }

  static int run(String[] args, PrintStream out, PrintStream err) throws Exception {
    String command = null;
    Path configFile = null;
    String account = null;
    List<String> rest = new ArrayList<>();
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      switch (a) {
        case "-h", "--help", "help" -> {
          out.println(USAGE);
          return 0;
        }
        case "--config" -> configFile = Path.of(value(args, ++i, a));
        case "--account" -> account = value(args, ++i, a);
        default -> {
          if (a.startsWith("--config=")) {
            configFile = Path.of(a.substring("--config=".length()));
          } else if (a.startsWith("--account=")) {
            account = a.substring("--account=".length());
          } else if (command == null && !a.startsWith("-")) {
            command = a;
          } else {
            rest.add(a);
          }
        }
      }
    }
    if (!rest.isEmpty()) {
      throw new IllegalArgumentException("unexpected arguments " + rest + "\n" + USAGE);
    }
    if (configFile != null && !Files.isRegularFile(configFile)) {
      throw new IllegalArgumentException("config file " + configFile + " does not exist");
    }
    ServerConfig config = ServerConfig.load(configFile);
    String cmd = command == null ? "serve" : command;
    switch (cmd) {
      case "serve" -> {
        if (account != null) {
          throw new IllegalArgumentException("--account belongs to create-key\n" + USAGE);
        }
        serve(config);
        return 0;
      }
      case "create-key" -> {
        if (account == null || account.isBlank()) {
          throw new IllegalArgumentException("create-key needs --account NAME\n" + USAGE);
        }
        createKey(config, account, out, err);
        return 0;
      }
      default -> throw new IllegalArgumentException("unknown command '" + cmd + "'\n" + USAGE);
    }
  }

  private static String value(String[] args, int i, String option) {
    if (i >= args.length) {
      throw new IllegalArgumentException(option + " needs a value\n" + USAGE);
    }
    return args[i];
  }

  private static void serve(ServerConfig config) throws InterruptedException {
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

  /** Prints the key alone on stdout (easy to capture in a script) and the notes on stderr. */
  private static void createKey(
      ServerConfig config, String account, PrintStream out, PrintStream err) throws IOException {
    try (Billing billing = Billing.start(config.databaseConfig())) {
      CreatedApiKey key = billing.apiKeys().create(account);
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
      out.println(key.plaintext());
      out.flush();
      err.println(
          "Store it now: it is shown only this once and cannot be shown again (only its hash"
              + " is kept).");
    }
  }
}
