package io.gpumeter.server;

import io.gpumeter.billing.BillingAdmin;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.SetAsideReplay;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Spec;

/**
 * {@code replay}: re-applies the charges set aside in the outbox (the intact records of quarantined
 * segments and the dead-letter entries) through the idempotent ledger, and prints what was applied,
 * already present and still refused. Needs the outbox, which a running server holds: then it fails
 * with a message pointing to {@code POST /admin/replay}, which does the same inside the server.
 */
@Command(
    name = "replay",
    mixinStandardHelpOptions = true,
    versionProvider = Main.Version.class,
    description = {
      "Re-applies the charges set aside in the outbox (quarantined segments, dead letters),"
          + " idempotently.",
      "Run it while the server is stopped; a running server does the same on POST /admin/replay."
    },
    exitCodeListHeading = "%nExit status:%n",
    exitCodeList = {
      "0:nothing is left set aside",
      "1:failure (a running server holds the outbox, or the database failed)",
      "2:bad arguments or settings",
      "3:some records were refused again and stay set aside"
    })
final class ReplayCommand implements Callable<Integer> {
  @Spec CommandSpec spec;

  @Mixin ConfigOption config;

  @Override
  public Integer call() throws Exception {
    ServerConfig settings = config.load();
    LedgerConfig ledger = settings.billingConfig().ledger();
    PrintWriter out = spec.commandLine().getOut();
    try (BillingAdmin admin = BillingAdmin.open(settings.toolDatabaseConfig())) {
      Path outbox = admin.outboxDirectory(ledger);
      SetAsideReplay r;
      try {
        r = admin.replaySetAside(outbox, ledger);
      } catch (IllegalStateException e) {
        throw new IllegalStateException(
            e.getMessage() + "; while the server runs, use POST /admin/replay", e);
      }
      out.println(r.toText());
      out.flush();
      return r.refused() > 0 ? Main.EXIT_DRIFT : 0;
    }
  }
}
