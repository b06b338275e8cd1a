package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.MeasuredDelta;
import io.gpumeter.billing.ledger.CommitLog;
import io.gpumeter.billing.ledger.Ledger;
import io.gpumeter.billing.ledger.MeasuredBatch;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import org.junit.jupiter.api.Test;

/**
 * The CLI {@code reconcile} beside a local commit log that holds acknowledged charges not yet in
 * PostgreSQL (what a running server, or one killed with PostgreSQL down, leaves): it reads the log
 * read-only, reports shipping lag with status 4, never drift; once the log is shipped, the same
 * range reconciles with drift 0.
 */
class ReconcileShippingLagTest {

  static UsageRecord record(String id, Instant finished, long deviceNs) {
    return new UsageRecord(
        id,
        9801,
        9801,
        "lag-model",
        TimerInfo.cpu("test"),
        "tokens",
        deviceNs,
        deviceNs / 2,
        deviceNs - deviceNs / 2,
        3,
        2,
        0,
        2,
        UsageStatus.OK,
        finished.minusMillis(20),
        finished);
  }

  @Test
  void unshippedChargesInTheLogAreShippingLagNotDrift() throws Exception {
    Path data = Path.of("target", "test-data", "lag-" + System.nanoTime()).toAbsolutePath();
    Files.createDirectories(data);
    Path cache = Path.of("target", "pg-binaries").toAbsolutePath();
    Path file = data.resolve("gpumeter.properties");
    Files.writeString(
        file,
        "data.dir="
            + data
            + "\ndb.binary_cache_dir="
            + cache
            + "\nledger.commit_point=local\nledger.commit_log_max_bytes=64m\n");
    ServerConfig config = ServerConfig.load(file, Map.of(), new Properties());

    // a first start creates the outbox folder and its owner id (the replica the log's charges
    // belong to), with nothing in the log
    UUID replica;
    Path outbox;
    try (Billing billing = Billing.start(config.databaseConfig(), config.billingConfig())) {
      replica = billing.replicaId();
      outbox = Billing.outboxDirectory(config.databaseConfig(), config.billingConfig().ledger());
    }
    Instant finished =
        Instant.now().minus(Duration.ofHours(3)).truncatedTo(ChronoUnit.MINUTES).plusSeconds(30);
    long minute = Math.floorDiv(finished.getEpochSecond(), 60);
    List<UsageRecord> records =
        List.of(record("cmpl-lag-1", finished, 1_000), record("cmpl-lag-2", finished, 3_000));
    MeasuredBatch measured =
        MeasuredBatch.of(
            replica,
            UUID.randomUUID(),
            List.of(new MeasuredDelta(minute, "lag-model", "cpu", 4_500, 4_000, 500, 2)),
            records);
    // acknowledged into the log, never shipped: a server killed while PostgreSQL was away
    try (CommitLog log = CommitLog.open(Ledger.commitLogDirectory(outbox), 1 << 20)) {
      log.commit(records, measured).join();
    }
    String from = finished.minus(Duration.ofMinutes(5)).toString();
    String to = finished.plus(Duration.ofMinutes(5)).toString();

    Cli lag =
        cli(
            "reconcile",
            "--config",
            file.toString(),
            "--from",
            from,
            "--to",
            to,
            "--shipping-wait",
            "1");
    assertThat(lag.status()).as(lag.toString()).isEqualTo(ReconcileCommand.EXIT_SHIPPING_LAG);
    assertThat(lag.err())
        .as(lag.toString())
        .contains("Shipping lag: 2 charges (4000 device ns) and 1 measured batches")
        .doesNotContain("Drift");
    assertThat(lag.out()).as("no report that would count the lag as drift").isEmpty();

    // the next start ships the log before it opens; then the same range reconciles exactly
    try (Billing billing = Billing.start(config.databaseConfig(), config.billingConfig())) {
      assertThat(billing.unshippedRecords()).isZero();
    }
    Cli shipped = cli("reconcile", "--config", file.toString(), "--from", from, "--to", to);
    assertThat(shipped.status()).as(shipped.toString()).isZero();
    assertThat(shipped.err()).as(shipped.toString()).doesNotContain("Shipping lag");
    assertThat(shipped.out()).as(shipped.toString()).contains("lag-model").contains("4000");
  }

  record Cli(int status, String out, String err) {}

  private static Cli cli(String... args) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int status =
        Main.run(
            args,
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8));
    return new Cli(
        status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }
}
