package io.gpumeter.server;

import io.gpumeter.billing.BillingAdmin;
import io.gpumeter.billing.HourlyUsage;
import io.gpumeter.billing.KvUsage;
import io.gpumeter.billing.UsageReport;
import io.gpumeter.billing.UsageTotals;
import java.io.PrintWriter;
import java.math.BigInteger;
import java.time.Duration;
import java.time.Instant;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code usage --key ID [--from ISO] [--to ISO]}: a key's usage per UTC hour and model, the same
 * figures as {@code GET /v1/usage} (the hourly rollup less voided charges), with the KV-cache
 * memory-time beside the device time (issue 18). Tab-separated, a header row, one row per hour and
 * model, then a {@code TOTAL} row. Only the database is opened (beside a running server, its
 * PostgreSQL).
 */
@Command(
    name = "usage",
    mixinStandardHelpOptions = true,
    versionProvider = Main.Version.class,
    description = {
      "Prints a key's usage per UTC hour and model over [from, to) (whole hours): requests,"
          + " device time, tokens and KV-cache memory-time (byte-ns, peak bytes), voided charges"
          + " excluded; the figures of GET /v1/usage."
    },
    exitCodeListHeading = "%nExit status:%n",
    exitCodeList = {"0:printed", "1:failure", "2:bad arguments or settings"})
final class UsageCommand implements Callable<Integer> {
  static final String HEADER =
      "HOUR\tMODEL\tREQUESTS\tDEVICE_NS\tPREFILL_NS\tDECODE_NS\tPROMPT_TOKENS\tCOMPLETION_TOKENS"
          + "\tKV_BYTE_NS\tPEAK_KV_BYTES";

  @Spec CommandSpec spec;

  @Mixin ConfigOption config;

  @Option(names = "--key", paramLabel = "ID", required = true, description = "The API key's id.")
  long keyId;

  @Option(
      names = "--from",
      paramLabel = "ISO",
      converter = ReconcileCommand.IsoInstant.class,
      description =
          "Start, ISO-8601 with an offset; rounded down to the hour (default: --to - 24h).")
  Instant from;

  @Option(
      names = "--to",
      paramLabel = "ISO",
      converter = ReconcileCommand.IsoInstant.class,
      description = "End (exclusive), ISO-8601 with an offset; rounded up (default: now).")
  Instant to;

  @Override
  public Integer call() throws Exception {
    Instant end = to == null ? Instant.now() : to;
    Instant start = from == null ? end.minus(Duration.ofHours(24)) : from;
    if (!end.isAfter(start)) {
      throw new ParameterException(
          spec.commandLine(), "--to (" + end + ") must be after --from (" + start + ")");
    }
    if (keyId < 1) {
      throw new ParameterException(spec.commandLine(), "--key must be positive, was " + keyId);
    }
    ServerConfig settings = config.load();
    PrintWriter out = spec.commandLine().getOut();
    try (BillingAdmin admin = BillingAdmin.open(settings.toolDatabaseConfig())) {
      UsageReport report = admin.usage().usage(keyId, start, end);
      List<KvUsage> kv = admin.usage().kvUsage(keyId, start, end);
      out.print(table(report, kv));
      out.flush();
    }
    return 0;
  }

  /** The printed table: a row per hour and model, then the totals (KV peak: the largest). */
  static String table(UsageReport report, List<KvUsage> kv) {
    Map<String, KvUsage> byBucket = new HashMap<>();
    BigInteger kvTotal = BigInteger.ZERO;
    long peakTotal = 0;
    for (KvUsage k : kv) {
      byBucket.put(k.hour() + "|" + k.model(), k);
      kvTotal = kvTotal.add(k.kvByteNs());
      peakTotal = Math.max(peakTotal, k.peakKvBytes());
    }
    StringBuilder sb = new StringBuilder(HEADER).append('\n');
    for (HourlyUsage h : report.hours()) {
      KvUsage k = byBucket.get(h.hour() + "|" + h.model());
      row(
          sb,
          h.hour().toString(),
          h.model(),
          h.totals(),
          k == null ? BigInteger.ZERO : k.kvByteNs(),
          k == null ? 0 : k.peakKvBytes());
    }
    row(sb, "TOTAL", "-", report.totals(), kvTotal, peakTotal);
    return sb.toString();
  }

  private static void row(
      StringBuilder sb, String hour, String model, UsageTotals t, BigInteger kv, long peak) {
    sb.append(hour).append('\t').append(model).append('\t');
    sb.append(t.requests()).append('\t').append(t.deviceNs()).append('\t');
    sb.append(t.prefillNs()).append('\t').append(t.decodeNs()).append('\t');
    sb.append(t.promptTokens()).append('\t').append(t.completionTokens()).append('\t');
    sb.append(kv).append('\t').append(peak).append('\n');
  }
}
