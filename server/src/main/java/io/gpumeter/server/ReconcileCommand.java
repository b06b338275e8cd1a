package io.gpumeter.server;

import io.gpumeter.billing.BillingAdmin;
import io.gpumeter.billing.ReconciliationReport;
import java.io.PrintWriter;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.format.DateTimeParseException;
import java.util.concurrent.Callable;
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
 * minute, so the last minute may lag; {@code GET /admin/reconcile} flushes them first.
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
      "3:a line drifts"
    })
final class ReconcileCommand implements Callable<Integer> {
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

  @Override
  public Integer call() throws Exception {
    if (!to.isAfter(from)) {
      throw new ParameterException(
          spec.commandLine(), "--to (" + to + ") must be after --from (" + from + ")");
    }
    ServerConfig settings = config.load();
    PrintWriter out = spec.commandLine().getOut();
    PrintWriter err = spec.commandLine().getErr();
    try (BillingAdmin admin = BillingAdmin.open(settings.toolDatabaseConfig())) {
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
