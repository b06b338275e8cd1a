package io.gpumeter.server;

import java.io.PrintStream;
import java.io.PrintWriter;
import java.util.concurrent.Callable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.ExitCode;
import picocli.CommandLine.HelpCommand;
import picocli.CommandLine.IVersionProvider;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.ParseResult;

/**
 * Command line (picocli): {@code serve} (the default) runs the server until SIGTERM/SIGINT; {@code
 * create-key --account NAME} (or {@code key create}) creates a key and prints it once; {@code key
 * list|revoke|rotate} lists, revokes and rotates keys; {@code reconcile --from ISO --to ISO} prints
 * the reconciliation report (exit status 3 on drift); {@code replay} re-applies the charges set
 * aside in the outbox (exit status 3 if some are refused again); {@code account}, {@code price},
 * {@code plan}, {@code credit}, {@code balance} and {@code invoice} run the money operations
 * ({@link MoneyCommands}; {@code invoice verify} exits 3 on a mismatch); {@code help [COMMAND]}.
 * Every command takes {@code --config FILE}, {@code --help} and {@code --version}; see
 * server/README.md for the settings. The tools open only the database ({@link
 * io.gpumeter.billing.BillingAdmin}), and close it; while a server runs on the embedded data folder
 * they connect to its PostgreSQL instead of starting one.
 *
 * <p>A new command is a class annotated with {@code @Command}, with {@code @Mixin ConfigOption
 * config} when it reads settings, listed in {@code subcommands} below (or under a group command of
 * its own, as {@code key} has).
 *
 * <p>Exit status: 0 success, 1 failure (also: {@code key revoke|rotate} of an unknown or revoked
 * key), 2 bad arguments or settings (unknown options included; the message goes to stderr; also
 * input the money engine refuses), 3 {@code reconcile} found drift, {@code replay} left records
 * refused or {@code invoice verify} found a mismatch.
 */
@Command(
    name = "gpumeter-server",
    mixinStandardHelpOptions = true,
    versionProvider = Main.Version.class,
    description = {
      "An OpenAI-compatible inference server that bills by measured device time.",
      "Without a command it runs `serve`."
    },
    subcommands = {
      ServeCommand.class,
      CreateKeyCommand.class,
      KeyCommand.class,
      ReconcileCommand.class,
      ReplayCommand.class,
      CalibrateCommand.class,
      UsageCommand.class,
      ModelCommand.class,
      MoneyCommands.AccountCommand.class,
      MoneyCommands.PriceCommand.class,
      MoneyCommands.PlanCommand.class,
      MoneyCommands.CreditCommand.class,
      MoneyCommands.BalanceCommand.class,
      MoneyCommands.InvoiceCommand.class,
      HelpCommand.class
    },
    footer = {
      "",
      "Settings come from the --config properties file, then GPUMETER_* environment",
      "variables, then -Dgpumeter.* system properties (see server/README.md).",
      "",
      "Examples:",
      "  java -jar gpumeter-server.jar --config gpumeter.properties",
      "  java -jar gpumeter-server.jar create-key --account demo",
      "  java -jar gpumeter-server.jar key list --account demo",
      "  java -jar gpumeter-server.jar key rotate 7",
      "  java -jar gpumeter-server.jar reconcile --from 2026-01-31T12:00:00Z \\",
      "      --to 2026-01-31T13:00:00Z"
    })
public final class Main implements Callable<Integer> {
  private static final Logger log = LoggerFactory.getLogger(Main.class);

  /** Exit status of {@code reconcile} when some line drifts. */
  public static final int EXIT_DRIFT = 3;

  @Mixin ConfigOption config;

  /** Picocli instantiates it; use {@link #run}. */
  Main() {}

  /** No command: {@code serve}, with the {@code --config} given here. */
  @Override
  public Integer call() throws Exception {
    ServeCommand.serve(config.load());
    return 0;
  }

  public static void main(String[] args) {
    int status = run(args, System.out, System.err);
    if (status != 0) {
      System.exit(status);
    }
  }

  /**
   * Runs one command; what {@link #main} does, without exiting, for tests and embedding. Errors are
   * printed on {@code err}, never thrown.
   *
   * @return the exit status: 0, 1 (failure), 2 (bad arguments or settings), {@link #EXIT_DRIFT}
   */
  public static int run(String[] args, PrintStream out, PrintStream err) {
    PrintWriter o = writer(out);
    PrintWriter e = writer(err);
    try {
      return commandLine().setOut(o).setErr(e).execute(args);
    } finally {
      o.flush();
      e.flush();
    }
  }

  /**
   * The command tree, with the exit statuses above. {@code @file} arguments are taken literally
   * (picocli would read them as argument files), so {@code --account @team} names an account.
   */
  static CommandLine commandLine() {
    return new CommandLine(new Main())
        .setExpandAtFiles(false)
        .setExecutionExceptionHandler(Main::onFailure);
  }

  /** The platform charset, as the {@code PrintStream}s of {@link System} use. */
  private static PrintWriter writer(PrintStream stream) {
    return new PrintWriter(stream, true);
  }

  /** Bad settings (IllegalArgumentException) are exit status 2, anything else 1. */
  private static int onFailure(Exception e, CommandLine command, ParseResult parsed) {
    if (e instanceof IllegalArgumentException) {
      command.getErr().println("gpumeter: " + e.getMessage());
      return ExitCode.USAGE;
    }
    log.error("gpumeter failed", e);
    command.getErr().println("gpumeter: " + e.getMessage());
    return ExitCode.SOFTWARE;
  }

  /** {@code --version}: the jar's Implementation-Version. */
  static final class Version implements IVersionProvider {
    @Override
    public String[] getVersion() {
      String v = Main.class.getPackage().getImplementationVersion();
      return new String[] {
        "gpumeter-server " + (v == null ? "(not run from the packaged jar: version unknown)" : v)
      };
    }
  }
}
