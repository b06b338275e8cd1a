package io.gpumeter.billing;

import java.time.Clock;
import java.time.Duration;
import java.util.Objects;

/**
 * Settings of {@link Billing} beyond where the database is: the ledger's write path, retention of
 * raw records, and how often reconciliation totals are written.
 *
 * @param ledger the write path: queue, durability, breaker, retry, outbox
 * @param retention raw-record retention and partition maintenance; {@code null} disables the
 *     background maintenance (tests)
 * @param reconciliationFlushInterval how often measured time ({@link Billing#measuredTime()}) is
 *     written on its own when no batch of usage records carried it (it always rides with every
 *     batch, in the same transaction); zero: only with batches, reports and close. The longer it
 *     is, the more in-flight step time a crash loses unrecorded (on both sides, so never drift)
 * @param clock for partition maintenance and reconciliation minutes
 * @param apiKeyCache the authentication cache of {@link Billing#apiKeys()}
 */
public record BillingConfig(
    LedgerConfig ledger,
    RetentionConfig retention,
    Duration reconciliationFlushInterval,
    Clock clock,
    ApiKeyCacheConfig apiKeyCache) {

  public BillingConfig {
    Objects.requireNonNull(ledger, "ledger");
    Objects.requireNonNull(clock, "clock");
    Objects.requireNonNull(apiKeyCache, "apiKeyCache");
    if (reconciliationFlushInterval == null || reconciliationFlushInterval.isNegative()) {
      throw new IllegalArgumentException(
          "reconciliationFlushInterval must be >= 0, was " + reconciliationFlushInterval);
    }
  }

  /** With the default API-key cache. */
  public BillingConfig(
      LedgerConfig ledger,
      RetentionConfig retention,
      Duration reconciliationFlushInterval,
      Clock clock) {
    this(ledger, retention, reconciliationFlushInterval, clock, ApiKeyCacheConfig.defaults());
  }

  /**
   * Default ledger, 90-day retention maintained hourly, measured time written at least every
   * second.
   */
  public static BillingConfig defaults() {
    return new BillingConfig(
        LedgerConfig.defaults(),
        RetentionConfig.defaults(),
        Duration.ofSeconds(1),
        Clock.systemUTC());
  }

  public BillingConfig withLedger(LedgerConfig l) {
    return new BillingConfig(l, retention, reconciliationFlushInterval, clock, apiKeyCache);
  }

  public BillingConfig withRetention(RetentionConfig r) {
    return new BillingConfig(ledger, r, reconciliationFlushInterval, clock, apiKeyCache);
  }

  public BillingConfig withReconciliationFlushInterval(Duration d) {
    return new BillingConfig(ledger, retention, d, clock, apiKeyCache);
  }

  public BillingConfig withClock(Clock c) {
    return new BillingConfig(ledger, retention, reconciliationFlushInterval, c, apiKeyCache);
  }

  public BillingConfig withApiKeyCache(ApiKeyCacheConfig a) {
    return new BillingConfig(ledger, retention, reconciliationFlushInterval, clock, a);
  }
}
