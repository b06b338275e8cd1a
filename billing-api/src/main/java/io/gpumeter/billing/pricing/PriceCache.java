package io.gpumeter.billing.pricing;

import io.gpumeter.billing.ChargeCost;
import io.gpumeter.billing.PriceVersion;
import io.gpumeter.metering.UsageRecord;
import java.math.BigInteger;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Every price version in memory, so a receipt is priced on the event loop without a database round
 * trip, by the same rule as the trigger that prices the stored charge ({@code
 * price_and_deduct_charges}, V7): the version of (model, device class, account currency) whose
 * {@code [from, to)} holds the record's {@code finished_at}, the model's own version before {@code
 * *}; device class by {@link DeviceClasses} (the SQL function's twin); cost {@code device_ns x
 * price} ({@link Money#cost}), rounded by {@link Money#roundToMicros}.
 *
 * <p>Concurrency: the versions are one immutable list behind a volatile field. {@link #reload()}
 * runs on the caller's thread (at start); {@link #reloadSoon()} (a notification from another
 * process, migration V14's trigger on {@code price_versions}) queues one reload on the cache's own
 * daemon thread, coalescing requests that arrive while one is queued.
 *
 * <p>Staleness: a version committed elsewhere reaches the cache after the notification (within the
 * invalidation listener's poll, 250 ms) and one reload; while the listener is disconnected, its gap
 * handler reloads once it is back; and whatever happens to notifications, the cache reloads itself
 * every {@link #FALLBACK_RELOAD}. So a version is known here at most about that long after it is
 * committed.
 *
 * <p>Exactness (DESIGN.md invariant 8): the cache holds future versions too, and picks by the
 * record's {@code finished_at} truncated to microseconds, the value the ledger stores and the
 * trigger prices by. A receipt therefore equals its stored charge whenever every version that could
 * cover it was known here when it was priced: that is what the price book's lead time ({@code
 * pricing.min_lead}, longer than {@link #FALLBACK_RELOAD}) guarantees for versions set through the
 * admin API or the command line, which must start at least that far in the future.
 */
public final class PriceCache implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(PriceCache.class);

  /**
   * How often the cache reloads on its own, whether or not a notification came: the bound on its
   * staleness when a notification is lost. {@code pricing.min_lead} must be longer.
   */
  public static final Duration FALLBACK_RELOAD = Duration.ofSeconds(10);

  private final PriceBook book;
  private final ScheduledExecutorService reloader;
  private final AtomicBoolean queued = new AtomicBoolean();
  private volatile List<PriceVersion> versions = List.of();

  public PriceCache(PriceBook book) {
    this.book = book;
    this.reloader =
        Executors.newSingleThreadScheduledExecutor(
            r -> {
              Thread t = new Thread(r, "gpumeter-price-cache");
              t.setDaemon(true);
              return t;
            });
    long every = FALLBACK_RELOAD.toMillis();
    reloader.scheduleWithFixedDelay(this::reloadSoon, every, every, TimeUnit.MILLISECONDS);
  }

  /**
   * Reads every price version now, on this thread.
   *
   * @throws io.gpumeter.billing.BillingException if the database fails (the old list stays)
   */
  public void reload() {
    versions = List.copyOf(book.list());
  }

  /** Queues a reload on the cache's thread; a failure is logged and the old list stays. */
  public void reloadSoon() {
    if (!queued.compareAndSet(false, true)) {
      return;
    }
    try {
      reloader.execute(
          () -> {
            queued.set(false);
            try {
              reload();
            } catch (RuntimeException e) {
              LOG.warn("price versions not reloaded (receipts use the previous ones)", e);
            }
          });
    } catch (RejectedExecutionException e) {
      queued.set(false); // closed
    }
  }

  /**
   * The version that prices a charge of this model and device class in this currency at {@code at}.
   */
  public Optional<PriceVersion> find(
      String model, String deviceClass, String currency, Instant at) {
    PriceVersion wildcard = null;
    for (PriceVersion v : versions) {
      if (v.deviceClass().equals(deviceClass)
          && v.currency().equals(currency)
          && !at.isBefore(v.from())
          && (v.to() == null || at.isBefore(v.to()))) {
        if (v.model().equals(model)) {
          return Optional.of(v);
        }
        if (v.model().equals("*")) {
          wildcard = v;
        }
      }
    }
    return Optional.ofNullable(wildcard);
  }

  /**
   * The receipt of a record for an account in {@code currency}: what the trigger will store for it
   * (empty when no version covers it: the charge is stored unpriced).
   */
  public Optional<ChargeCost> price(UsageRecord r, String currency) {
    String cls = DeviceClasses.of(r.timer().device(), r.timer().deviceName());
    if (cls == null) {
      return Optional.empty();
    }
    // the instant the ledger stores (JdbcLedgerStore truncates to PostgreSQL's microseconds)
    return find(r.model(), cls, currency, r.finishedAt().truncatedTo(ChronoUnit.MICROS))
        .map(
            v -> {
              BigInteger exact = Money.cost(r.deviceNs(), v.priceMicrosPerSecond());
              return new ChargeCost(
                  r.requestId(),
                  r.deviceNs(),
                  exact,
                  Money.roundToMicros(exact),
                  currency,
                  v.id(),
                  v.priceMicrosPerSecond());
            });
  }

  @Override
  public void close() {
    reloader.shutdownNow();
  }
}
