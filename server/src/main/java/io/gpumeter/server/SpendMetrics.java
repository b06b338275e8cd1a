package io.gpumeter.server;

import io.gpumeter.billing.Balance;
import io.prometheus.metrics.config.PrometheusProperties;
import io.prometheus.metrics.core.metrics.CounterWithCallback;
import io.prometheus.metrics.core.metrics.GaugeWithCallback;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.LongFunction;

/**
 * Device time and spend per account on {@code /metrics}, with the number of series bounded by
 * configuration (server/README.md, "Spend metrics").
 *
 * <p><b>Cardinality:</b> an account has its own series ({@code account="<name>"}) when it is named
 * in {@code metrics.spend_accounts} (opt-in), or once it is promoted: at each scrape, while fewer
 * than {@code metrics.spend_top_accounts} accounts were promoted, the unlabelled account with the
 * most device time so far is promoted. Everything else is counted under {@code account="other"}. So
 * there are at most {@code |opt-in| + N + 1} series per metric. A promoted account keeps its series
 * until the process restarts. An account named {@code other} is always counted in {@code other}.
 *
 * <p><b>Monotonic:</b> an account's counts go to {@code other} until it has its own series, and to
 * its own series from then on (its earlier counts stay in {@code other}), so every series only
 * grows and the sum over all series is the process total: {@code rate()} and {@code sum()} are
 * right across promotions.
 *
 * <p><b>What counts:</b> each charge once it is durable (every status: finished, cancelled, timed
 * out), its device time in nanoseconds and its receipt's cost in micro-units (rounded per request
 * by the one rule; an invoice rounds per line, so it can differ by under one micro-unit per
 * request). A charge voided later is not subtracted. Spend is labelled with the currency; a charge
 * no price covered adds device time and no spend.
 *
 * <p><b>Gauges:</b> remaining prepaid credit (micro-units) and remaining plan allowance of the
 * month (device ns) of each account with its own series, from the balance cache (as stale as the
 * {@code x-ratelimit-*} headers; absent while not cached).
 *
 * <p>Concurrency: {@link #record} is called from any thread (adders in a concurrent map, one entry
 * per account seen since start); promotion and callbacks run under the scrape's lock.
 */
final class SpendMetrics {
  static final String OTHER = "other";

  private final Set<String> optIn;
  private final int topN;
  private final Map<String, Account> accounts = new ConcurrentHashMap<>();
  private final Series other = new Series();
  private int promoted;

  /**
   * @param optIn account names that always have their own series
   * @param topN how many more accounts are promoted to their own series, by device time
   */
  SpendMetrics(Set<String> optIn, int topN) {
    this.optIn = Set.copyOf(optIn);
    this.topN = topN;
  }

  /** One account's running totals. */
  private static final class Account {
    final long id;
    final String name;
    volatile boolean labelled;

    /** Device time counted in {@code other} while unlabelled: what promotion ranks. */
    final LongAdder unlabelledNs = new LongAdder();

    final Series own = new Series();

    Account(long id, String name, boolean labelled) {
      this.id = id;
      this.name = name;
      this.labelled = labelled;
    }
  }

  /** The counters of one series. */
  private static final class Series {
    final LongAdder deviceNs = new LongAdder();
    final LongAdder requests = new LongAdder();
    final Map<String, LongAdder> spendMicros = new ConcurrentHashMap<>();
  }

  /**
   * Counts one durable charge.
   *
   * @param costMicros its receipt's cost, or null when it was not priced
   * @param currency ISO 4217 code, with {@code costMicros}
   */
  void record(long accountId, String accountName, long deviceNs, Long costMicros, String currency) {
    Account a =
        accounts.computeIfAbsent(
            accountName, n -> new Account(accountId, n, optIn.contains(n) && !n.equals(OTHER)));
    Series s;
    if (a.labelled) {
      s = a.own;
    } else {
      s = other;
      a.unlabelledNs.add(deviceNs);
    }
    s.deviceNs.add(deviceNs);
    s.requests.increment();
    if (costMicros != null) {
      s.spendMicros
          .computeIfAbsent(currency.toLowerCase(Locale.ROOT), c -> new LongAdder())
          .add(costMicros);
    }
  }

  /** Promotes accounts to their own series while there is room (at scrape time). */
  private synchronized List<Account> labelled() {
    while (promoted < topN) {
      Optional<Account> best =
          accounts.values().stream()
              .filter(a -> !a.labelled && !a.name.equals(OTHER) && a.unlabelledNs.sum() > 0)
              .max(Comparator.comparingLong(a -> a.unlabelledNs.sum()));
      if (best.isEmpty()) {
        break;
      }
      best.get().labelled = true;
      promoted++;
    }
    List<Account> out = new ArrayList<>();
    for (Account a : accounts.values()) {
      if (a.labelled) {
        out.add(a);
      }
    }
    out.sort(Comparator.comparing(a -> a.name));
    return out;
  }

  /**
   * Registers the account metrics in {@code registry}.
   *
   * @param balances the cached balance of an account id, if loaded (never waits)
   */
  void register(
      PrometheusRegistry registry,
      PrometheusProperties properties,
      LongFunction<Optional<Balance>> balances) {
    CounterWithCallback.builder(properties)
        .name("gpumeter_account_device_nanoseconds_total")
        .help(
            "Device time charged per account (durable charges); accounts without their own"
                + " series are summed as account=\"other\".")
        .labelNames("account")
        .callback(
            cb -> {
              for (Account a : labelled()) {
                cb.call(a.own.deviceNs.sum(), a.name);
              }
              cb.call(other.deviceNs.sum(), OTHER);
            })
        .register(registry);
    CounterWithCallback.builder(properties)
        .name("gpumeter_account_requests_total")
        .help("Durable charges per account; the rest as account=\"other\".")
        .labelNames("account")
        .callback(
            cb -> {
              for (Account a : labelled()) {
                cb.call(a.own.requests.sum(), a.name);
              }
              cb.call(other.requests.sum(), OTHER);
            })
        .register(registry);
    CounterWithCallback.builder(properties)
        .name("gpumeter_account_spend_micros_total")
        .help(
            "Cost of the durable charges per account in micro-units of its currency (receipts,"
                + " rounded per request); the rest as account=\"other\".")
        .labelNames("account", "currency")
        .callback(
            cb -> {
              for (Account a : labelled()) {
                if (a.own.spendMicros.isEmpty()) {
                  // nothing priced yet: 0 in the account's currency, once its balance is cached
                  balances
                      .apply(a.id)
                      .ifPresent(b -> cb.call(0, a.name, b.currency().toLowerCase(Locale.ROOT)));
                }
                a.own.spendMicros.forEach((c, v) -> cb.call(v.sum(), a.name, c));
              }
              other.spendMicros.forEach((c, v) -> cb.call(v.sum(), OTHER, c));
            })
        .register(registry);
    GaugeWithCallback.builder(properties)
        .name("gpumeter_account_remaining_credit_micros")
        .help(
            "Prepaid credit left per account with its own series, in micro-units (cached"
                + " balance, as x-ratelimit-remaining-credit-micros).")
        .labelNames("account", "currency")
        .callback(
            cb -> {
              for (Account a : labelled()) {
                balances
                    .apply(a.id)
                    .ifPresent(
                        b -> cb.call(b.micros(), a.name, b.currency().toLowerCase(Locale.ROOT)));
              }
            })
        .register(registry);
    GaugeWithCallback.builder(properties)
        .name("gpumeter_account_remaining_allowance_nanoseconds")
        .help(
            "Plan allowance of the month left per account with its own series, device ns"
                + " (cached balance, as x-ratelimit-remaining-allowance-device-ns).")
        .labelNames("account")
        .callback(
            cb -> {
              for (Account a : labelled()) {
                balances.apply(a.id).ifPresent(b -> cb.call(Receipt.remainingAllowance(b), a.name));
              }
            })
        .register(registry);
  }
}
