package io.gpumeter.server;

import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.KeyScope;
import io.gpumeter.billing.keys.ApiKeys;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.concurrent.CompletableFuture;

/**
 * The organization that {@code UsageApiTest} and {@code CostsApiTest} read back: account acme with
 * two inference keys and an account-admin key, account globex with an account-admin key, a day to
 * place synthetic records in, and a publish that hands a record to the running server's ledger
 * exactly as a completion's charge reaches it (so the triggers roll it up and price it).
 */
final class OrganizationFixture {
  /** The timer of every synthetic record: device {@code cpu}. */
  static final TimerInfo TIMER = new TimerInfo("test", "cpu", "cpu", "", "", "");

  final CreatedApiKey a1; // acme, inference
  final CreatedApiKey a2; // acme, inference
  final CreatedApiKey admin; // acme, account_admin
  final CreatedApiKey g1; // globex, account_admin

  /** Midnight UTC two days ago: recent enough for the raw records' retention. */
  final Instant day;

  private final GpumeterServer server;

  /** Creates the four keys, in this order, on the server's database. */
  OrganizationFixture(GpumeterServer server) {
    this.server = server;
    ApiKeys keys = server.billing().apiKeys();
    a1 = keys.create("acme");
    a2 = keys.create("acme");
    admin = keys.create("acme", KeyScope.ACCOUNT_ADMIN);
    g1 = keys.create("globex", KeyScope.ACCOUNT_ADMIN);
    day = Instant.now().truncatedTo(ChronoUnit.DAYS).minus(Duration.ofDays(2));
  }

  /** An {@code ok} record of one step that finished at {@code at}, 1 ms after it started. */
  CompletableFuture<Void> publish(
      String id,
      CreatedApiKey key,
      String model,
      Instant at,
      long prefill,
      long decode,
      int prompt,
      int completion,
      String session) {
    return server
        .billing()
        .ledger()
        .publish(
            new UsageRecord(
                id,
                key.keyId(),
                key.accountId(),
                model,
                TIMER,
                "test",
                prefill + decode,
                prefill,
                decode,
                prompt,
                completion,
                0,
                1,
                UsageStatus.OK,
                at.minusMillis(1),
                at,
                session,
                0,
                0));
  }

  /** The query parameters of a time range, in Unix seconds. */
  static String range(Instant from, Instant to) {
    return "start_time=" + from.getEpochSecond() + "&end_time=" + to.getEpochSecond();
  }
}
