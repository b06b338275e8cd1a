package io.gpumeter.server;

import io.gpumeter.billing.BillingAdmin;
import io.gpumeter.billing.CommitLogBacklog;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.ReconciliationReport;
import java.io.PrintWriter;
import java.time.Duration;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.format.DateTimeParseException;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import picocli.CommandLine.Command;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;
import picocli.CommandLine.TypeConversionException;

/**
 * {@code reconcile --from ISO --to ISO [--replica UUID]}: prints the reconciliation report (per
 * model and device, and per replica) on stdout; exit status {@link Main#EXIT_DRIFT} when a line or
 * a replica drifts. Only the database is started (or, when a server runs on the embedded folder,
 * reached over TCP): no ledger, no outbox. A running server writes its measured totals every
 * minute, so the last minute may lag; {@code GET /admin/reconcile} flushes them first. With a local
 * commit log beside the outbox folder (same node), charges in it that are not yet in the database
 * are shipping lag: it waits {@code --shipping-wait} for them, then refuses (status {@link
 * #EXIT_SHIPPING_LAG}) rather than report them as drift.
 */
@Command(
    name = "reconcile",
    mixinStandardHelpOptions = true,
    versionProvider = Main.Version.class,
    description = {
      "Prints measured device time against the ledger over [from, to) (whole UTC minutes).",
      "Works while the server runs: with the embedded database it connects to the running"
          + " server's PostgreSQL."
    },
    exitCodeListHeading = "%nExit status:%n",
    exitCodeList = {
      "0:no line drifts",
      "1:failure",
      "2:bad arguments or settings",
      "3:a line drifts",
      "4:charges still wait in the local commit log (shipping lag, not drift); retry"
    })
final class ReconcileCommand implements Callable<Integer> {
  /**
   * Exit status when charges acknowledged into a local commit log (a running server's, or one a
   * killed server left) are not yet in PostgreSQL after {@code --shipping-wait}: no report is
   * printed, since it would count them as drift.
   */
  static final int EXIT_SHIPPING_LAG = 4;

  @Spec CommandSpec spec;

  @Mixin ConfigOption config;

  @Option(
      names = "--from",
      paramLabel = "ISO",
      required = true,
      converter = IsoInstant.class,
      description = "Start, ISO-8601 with an offset (2026-01-31T12:00:00Z); rounded down.")
  Instant from;

  @Option(
      names = "--to",
      paramLabel = "ISO",
      required = true,
      converter = IsoInstant.class,
      description = "End (exclusive), ISO-8601 with an offset; rounded up.")
  Instant to;

  @Option(
      names = "--replica",
      paramLabel = "UUID",
      description =
          "Only this replica's measured time and charges (its outbox owner id: /readyz shows it as"
              + " ledger_replica). Without it: the whole ledger, with drift per replica.")
  java.util.UUID replica;

  @Option(
      names = "--shipping-wait",
      paramLabel = "SECONDS",
      defaultValue = "10",
      description =
          "With a local commit log (ledger.commit_point=local): how long to wait for the charges"
              + " in it to reach the database before refusing with status 4 (default: ${DEFAULT-VALUE}).")
  long shippingWaitSeconds;

  @Override
  public Integer call() throws Exception {
    if (!to.isAfter(from)) {
      throw new ParameterException(
          spec.commandLine(), "--to (" + to + ") must be after --from (" + from + ")");
    }
    ServerConfig settings = config.load();
    PrintWriter out = spec.commandLine().getOut();
    PrintWriter err = spec.commandLine().getErr();
    if (shippingWaitSeconds < 0) {
      throw new ParameterException(
          spec.commandLine(), "--shipping-wait must be 0 or more, got " + shippingWaitSeconds);
    }
    try (BillingAdmin admin = BillingAdmin.open(settings.toolDatabaseConfig())) {
      CommitLogBacklog lag =
          awaitShipped(
              admin, settings.billingConfig().ledger(), Duration.ofSeconds(shippingWaitSeconds));
      if (lag.waiting()) {
        err.println(
            "Shipping lag: "
                + lag.describe()
                + " (a running server ships them in commit order; a stopped one at its next"
                + " start). A report now would count them as drift, so none is printed; retry"
                + " later.");
        err.flush();
        return EXIT_SHIPPING_LAG;
      }
      ReconciliationReport report = admin.reconcile(from, to, replica);
      out.print(report.toText());
      out.flush();
      boolean drift = report.drifts();
      if (drift) {
        err.println(
            report.exact()
                ? "Drift: charges handed out and the ledger disagree (positive: missing from the"
                    + " ledger or still in an outbox; negative: counted twice)."
                : "Drift, but requests straddle the range's boundaries: pick boundaries at quiet"
                    + " moments for an exact comparison.");
        err.flush();
      }
      return drift ? Main.EXIT_DRIFT : 0;
    }
  }

  /**
   * Reads the local commit log beside the outbox folder (read-only) until the database holds all of
   * it or {@code wait} has passed; polls every 200 ms.
   */
  private static CommitLogBacklog awaitShipped(
      BillingAdmin admin, LedgerConfig ledger, Duration wait) {
    long end = System.nanoTime() + wait.toNanos();
    while (true) {
      CommitLogBacklog lag = admin.commitLogBacklog(ledger);
      long left = end - System.nanoTime();
      if (!lag.waiting() || left <= 0) {
        return lag;
      }
      LockSupport.parkNanos(Math.min(left, TimeUnit.MILLISECONDS.toNanos(200)));
    }
  }

  /** ISO-8601 with an offset ({@code 2026-01-31T12:00:00+01:00}) or in UTC ({@code ...Z}). */
  static final class IsoInstant implements ITypeConverter<Instant> {
    @Override
    public Instant convert(String text) {
      try {
        return OffsetDateTime.parse(text.trim()).toInstant();
      } catch (DateTimeParseException e) {
        try {
          return Instant.parse(text.trim());
        } catch (DateTimeParseException e2) {
          throw new TypeConversionException(
              "must be an ISO-8601 time with an offset, such as 2026-01-31T12:00:00Z; got '"
                  + text
                  + "'");
        }
      }
    }
  }
}
