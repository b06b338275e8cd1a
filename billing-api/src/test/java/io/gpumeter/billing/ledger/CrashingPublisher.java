package io.gpumeter.billing.ledger;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.BillingConfig;
import io.gpumeter.billing.CommitPoint;
import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.metering.UsageRecord;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;

/**
 * A process that publishes usage records until it is killed (for {@link LedgerFailoverTest}): it
 * starts {@link Billing} on an external database URL with an explicit outbox folder, prints {@code
 * READY}, and for each line {@code GO <count>} on stdin publishes that many more records {@code
 * <prefix>-<n>} in DURABLE mode. It prints {@code DURABLE <id>} for every future that completed
 * normally (the record is committed or fsynced to the outbox) and {@code FAILED <id>} for the
 * others. It never closes Billing: the test kills it with SIGKILL (and if its stdin ends, the test
 * is gone, it halts).
 *
 * <p>Arguments: jdbc url, outbox folder, id prefix, api key id, and optionally the commit point
 * ({@code POSTGRES} or {@code LOCAL}).
 */
public final class CrashingPublisher {
  private CrashingPublisher() {}

  public static void main(String[] args) throws Exception {
    String url = args[0];
    Path outbox = Path.of(args[1]);
    String prefix = args[2];
    long keyId = Long.parseLong(args[3]);
    // args[4], optional: the commit point (POSTGRES or LOCAL; POSTGRES when absent)
    PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
    LedgerConfig ledger =
        LedgerConfig.custom()
            .outboxDirectory(outbox)
            .breakerOpenWait(Duration.ofMillis(300))
            .replayInterval(Duration.ofMillis(100))
            .retryBackoff(Duration.ofMillis(20))
            .maxBatchSize(100)
            .commitPoint(args.length > 4 ? CommitPoint.valueOf(args[4]) : CommitPoint.POSTGRES)
            .build();
    DatabaseConfig db =
        DatabaseConfig.builder()
            .jdbcUrl(url)
            .user("postgres")
            .ledgerConnectionTimeout(Duration.ofMillis(500))
            .build();
    Billing billing =
        Billing.start(db, BillingConfig.defaults().withLedger(ledger).withRetention(null));
    synchronized (out) {
      out.println("READY");
      out.flush();
    }
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    long n = 0;
    for (String line; (line = in.readLine()) != null; ) {
      if (!line.startsWith("GO ")) {
        continue;
      }
      long end = n + Long.parseLong(line.substring(3).trim());
      for (; n < end; n++) {
        String id = prefix + "-" + n;
        UsageRecord r =
            TestSupport.record(id, keyId, 77, "toy", Instant.now(), 700 + n % 13, 300, 7, 3);
        billing
            .ledger()
            .publish(r)
            .whenComplete(
                (v, e) -> {
                  synchronized (out) {
                    out.println((e == null ? "DURABLE " : "FAILED ") + id);
                    out.flush();
                  }
                });
        if (n % 20 == 19) {
          Thread.sleep(5);
        }
      }
    }
    Runtime.getRuntime().halt(1); // stdin ended: the test is gone
  }
}
