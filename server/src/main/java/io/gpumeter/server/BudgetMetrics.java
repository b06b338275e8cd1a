package io.gpumeter.server;

import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.Budgets;
import io.gpumeter.billing.InsufficientQuotaException;
import io.gpumeter.billing.accounting.Accounting;
import io.prometheus.metrics.config.PrometheusProperties;
import io.prometheus.metrics.core.metrics.CounterWithCallback;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import java.math.BigInteger;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.LongAdder;

/**
 * Budget reservations and settlements on {@code /metrics} (server/README.md, "Budget metrics"):
 * admissions reserved, refused by reason, settled, and the device time reserved at admission and
 * settled as charged. Amounts are integer device nanoseconds: a reservation is made in device time
 * and priced by the account's lease in its currency, so device time is the one unit every
 * reservation shares. Beside them, the same two amounts in money, per currency: the estimate and
 * the settled charge priced at the price the reservation was made at ({@link
 * Budgets.Reservation#priceMicrosPerSecond}), summed exactly in nano-micro-units and shown in
 * micro-units rounded once by the one rule ({@code Accounting.roundToMicros}). A request not
 * charged in money (no price for its account's currency) adds nothing to them.
 *
 * <p>Concurrency: the counters are adders, updated from any thread; a reservation's settlement is
 * counted once even when it is settled again ({@link Budgets.Reservation#settle} is idempotent).
 */
final class BudgetMetrics {
  /** Refusal reasons, the values of the {@code reason} label. */
  static final String INSUFFICIENT_FUNDS = "insufficient_funds";

  static final String SUSPENDED = "suspended";
  static final String UNAVAILABLE = "billing_unavailable";

  private final LongAdder reserved = new LongAdder();
  private final LongAdder reservedNs = new LongAdder();
  private final LongAdder refusedFunds = new LongAdder();
  private final LongAdder refusedSuspended = new LongAdder();
  private final LongAdder refusedUnavailable = new LongAdder();
  private final LongAdder settled = new LongAdder();
  private final LongAdder settledNs = new LongAdder();

  /** Exact nano-micro-unit sums per currency: [reserved, settled]; guarded by itself. */
  private final Map<String, BigInteger[]> money = new TreeMap<>();

  /**
   * Counts the outcome of one admission's reservation of {@code estimateNs}; a reservation it
   * yields is wrapped so that its settlement is counted.
   */
  CompletableFuture<Budgets.Reservation> count(
      CompletableFuture<Budgets.Reservation> reservation, long estimateNs) {
    return reservation.handle(
        (r, error) -> {
          if (error != null) {
            refused(error);
            throw error instanceof CompletionException c ? c : new CompletionException(error);
          }
          reserved.increment();
          reservedNs.add(Math.max(0, estimateNs));
          addMoney(r, estimateNs, 0);
          return new Counted(r);
        });
  }

  private void refused(Throwable error) {
    Throwable e =
        error instanceof CompletionException && error.getCause() != null ? error.getCause() : error;
    if (e instanceof InsufficientQuotaException q) {
      if (q.reason() == InsufficientQuotaException.Reason.SUSPENDED) {
        refusedSuspended.increment();
      } else {
        refusedFunds.increment();
      }
    } else if (e instanceof BillingException) {
      refusedUnavailable.increment();
    }
  }

  /** A reservation whose first settlement is counted. */
  private final class Counted implements Budgets.Reservation {
    private final Budgets.Reservation inner;
    private final AtomicBoolean settledOnce = new AtomicBoolean();

    Counted(Budgets.Reservation inner) {
      this.inner = inner;
    }

    @Override
    public boolean mayStep(long usedNs, long nextStepNs) {
      return inner.mayStep(usedNs, nextStepNs);
    }

    @Override
    public void settle(long chargedNs) {
      inner.settle(chargedNs);
      if (settledOnce.compareAndSet(false, true)) {
        settled.increment();
        settledNs.add(Math.max(0, chargedNs));
        addMoney(inner, chargedNs, 1);
      }
    }

    @Override
    public long priceMicrosPerSecond() {
      return inner.priceMicrosPerSecond();
    }

    @Override
    public String currency() {
      return inner.currency();
    }
  }

  /** Adds {@code ns} priced at {@code r}'s price to the money sum {@code which} of its currency. */
  private void addMoney(Budgets.Reservation r, long ns, int which) {
    long price = r.priceMicrosPerSecond();
    String currency = r.currency();
    if (currency == null) {
      return;
    }
    // not charged in money (price -1): nothing added, but the currency's series exists (at 0)
    BigInteger amount =
        price < 0
            ? BigInteger.ZERO
            : BigInteger.valueOf(Math.max(0, ns)).multiply(BigInteger.valueOf(price));
    synchronized (money) {
      BigInteger[] sums =
          money.computeIfAbsent(currency, c -> new BigInteger[] {BigInteger.ZERO, BigInteger.ZERO});
      sums[which] = sums[which].add(amount);
    }
  }

  /** The money sum {@code which} of every currency, in micro-units (rounded once). */
  private Map<String, Long> moneyMicros(int which) {
    Map<String, Long> out = new TreeMap<>();
    synchronized (money) {
      money.forEach((c, sums) -> out.put(c, Accounting.roundToMicros(sums[which])));
    }
    return out;
  }

  /** Registers the counters in {@code registry}. */
  void register(PrometheusRegistry registry, PrometheusProperties properties) {
    CounterWithCallback.builder(properties)
        .name("gpumeter_budget_reservations_total")
        .help("Completion admissions whose budget reservation was made.")
        .callback(cb -> cb.call(reserved.sum()))
        .register(registry);
    CounterWithCallback.builder(properties)
        .name("gpumeter_budget_refusals_total")
        .help(
            "Completion admissions refused by the budget: insufficient_funds and suspended (429"
                + " insufficient_quota), billing_unavailable (503).")
        .labelNames("reason")
        .callback(
            cb -> {
              cb.call(refusedFunds.sum(), INSUFFICIENT_FUNDS);
              cb.call(refusedSuspended.sum(), SUSPENDED);
              cb.call(refusedUnavailable.sum(), UNAVAILABLE);
            })
        .register(registry);
    CounterWithCallback.builder(properties)
        .name("gpumeter_budget_settlements_total")
        .help(
            "Budget reservations settled (the charge recorded, or released with nothing charged).")
        .callback(cb -> cb.call(settled.sum()))
        .register(registry);
    CounterWithCallback.builder(properties)
        .name("gpumeter_budget_reserved_device_nanoseconds_total")
        .help("Device time reserved at admission (the estimate), integer nanoseconds.")
        .callback(cb -> cb.call(reservedNs.sum()))
        .register(registry);
    CounterWithCallback.builder(properties)
        .name("gpumeter_budget_settled_device_nanoseconds_total")
        .help(
            "Device time settled against reservations (the durable charges), integer"
                + " nanoseconds.")
        .callback(cb -> cb.call(settledNs.sum()))
        .register(registry);
    CounterWithCallback.builder(properties)
        .name("gpumeter_budget_reserved_micros_total")
        .help(
            "Estimates reserved at admission priced at the reservation's price, integer"
                + " micro-units of the currency (requests charged in money only).")
        .labelNames("currency")
        .callback(cb -> moneyMicros(0).forEach((c, v) -> cb.call(v, c)))
        .register(registry);
    CounterWithCallback.builder(properties)
        .name("gpumeter_budget_settled_micros_total")
        .help(
            "Charges settled against reservations priced at the reservation's price, integer"
                + " micro-units of the currency (requests charged in money only).")
        .labelNames("currency")
        .callback(cb -> moneyMicros(1).forEach((c, v) -> cb.call(v, c)))
        .register(registry);
  }
}
