package io.gpumeter.server;

import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.BillingAdmin;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.ReconciliationReport;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Command line: {@code serve} (the default) runs the server until SIGTERM/SIGINT; {@code create-key
 * --account NAME} creates a key and prints it once; {@code reconcile --from ISO --to ISO} prints
 * the reconciliation report (exit status 3 on drift). All take {@code --config FILE}; see
 * server/README.md for the settings. The tools open only the database, and close it; while a
 * server runs on the embedded data folder they connect to its PostgreSQL instead of starting one.
 *
 * <p>Nobody but the owner stops the database: the embedded PostgreSQL registers no JVM shutdown
 * hook of its own, so at SIGTERM {@code serve}'s hook closes the server, which drains the ledger
 * and only then stops PostgreSQL.
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
          "  java -jar gpumeter-server.jar reconcile --from ISO --to ISO [--config FILE]",
          "      Prints measured device time against the ledger over [from, to) (whole UTC",
          "      minutes); exit status 0 when no line drifts, 3 when one does.",
          "  Both work while the server runs: with the embedded database they connect to the",
          "  running server's PostgreSQL.",
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

  /**
   * Runs one command; what {@link #main} does, without exiting, for tests and embedding.
   *
   * @return the exit status ({@code reconcile}: {@link #EXIT_DRIFT} when a line drifts)
   * @throws IllegalArgumentException for bad arguments or settings (exit status 2)
   */
  public static int run(String[] args, PrintStream out, PrintStream err) throws Exception {
    String command = null;
    Path configFile = null;
    String account = null;
    String from = null;
    String to = null;
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
        case "--from" -> from = value(args, ++i, a);
        case "--to" -> to = value(args, ++i, a);
        default -> {
          if (a.startsWith("--config=")) {
            configFile = Path.of(a.substring("--config=".length()));
          } else if (a.startsWith("--account=")) {
            account = a.substring("--account=".length());
          } else if (a.startsWith("--from=")) {
            from = a.substring("--from=".length());
          } else if (a.startsWith("--to=")) {
            to = a.substring("--to=".length());
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
    String cmd = command == null ? "serve" : command;
    if (account != null && !cmd.equals("create-key")) {
      throw new IllegalArgumentException("--account belongs to create-key\n" + USAGE);
    }
    if ((from != null || to != null) && !cmd.equals("reconcile")) {
      throw new IllegalArgumentException("--from and --to belong to reconcile\n" + USAGE);
    }
    switch (cmd) {
      case "serve" -> {
        serve(ServerConfig.load(configFile));
        return 0;
      }
      case "create-key" -> {
        if (account == null || account.isBlank()) {
          throw new IllegalArgumentException("create-key needs --account NAME\n" + USAGE);
        }
        createKey(ServerConfig.load(configFile), account, out, err);
        return 0;
      }
      case "reconcile" -> {
        if (from == null || to == null) {
          throw new IllegalArgumentException("reconcile needs --from ISO and --to ISO\n" + USAGE);
        }
        Instant f = instant("--from", from);
        Instant t = instant("--to", to);
        if (!t.isAfter(f)) {
          throw new IllegalArgumentException("--to (" + t + ") must be after --from (" + f + ")");
        }
        return reconcile(ServerConfig.load(configFile), f, t, out, err);
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

  static Instant instant(String option, String text) {
    try {
      return OffsetDateTime.parse(text.trim()).toInstant();
    } catch (DateTimeParseException e) {
      try {
        return Instant.parse(text.trim());
      } catch (DateTimeParseException e2) {
        throw new IllegalArgumentException(
            option + " must be an ISO-8601 time with an offset, such as 2026-01-31T12:00:00Z;"
                + " got '" + text + "'");
      }
    }
  }

  /**
   * Prints the report on stdout. Only the database is started (or, when a server runs on the
   * embedded folder, reached over TCP): no ledger, no outbox. A running server writes its
   * measured totals every minute, so the last minute may lag; {@code GET /admin/reconcile}
   * flushes them first.
   *
   * @return 0 when every line has zero drift, {@link #EXIT_DRIFT} otherwise
   */
  private static int reconcile(
      ServerConfig config, Instant from, Instant to, PrintStream out, PrintStream err) {
    try (BillingAdmin admin = BillingAdmin.open(config.toolDatabaseConfig())) {
      ReconciliationReport report = admin.reconcile(from, to);
      out.print(report.toText());
      out.flush();
      boolean drift = report.lines().stream().anyMatch(l -> l.driftNs() != 0);
      if (drift) {
        err.println(
            report.exact()
                ? "Drift: charges handed out and the ledger disagree (positive: missing from the"
                    + " ledger or still in an outbox; negative: counted twice)."
                : "Drift, but requests straddle the range's boundaries: pick boundaries at quiet"
                    + " moments for an exact comparison.");
      }
      return drift ? EXIT_DRIFT : 0;
    }
  }

  /** Exit status of {@code reconcile} when some line drifts. */
  public static final int EXIT_DRIFT = 3;

  /**
   * Prints the key alone on stdout (easy to capture in a script) and the notes on stderr. Only
   * the database is started (or reached, when a server runs on the embedded folder), and closed.
   */
  private static void createKey(
      ServerConfig config, String account, PrintStream out, PrintStream err) throws IOException {
    try (BillingAdmin admin = BillingAdmin.open(config.toolDatabaseConfig())) {
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
      out.println(key.plaintext());
      out.flush();
      err.println(
          "Store it now: it is shown only this once and cannot be shown again (only its hash"
              + " is kept).");
    }
  }
}
