package io.gpumeter.billing.budget;

import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.Budgets;
import io.gpumeter.billing.InsufficientQuotaException;
import io.gpumeter.billing.pricing.Settlement;
import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.function.LongSupplier;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Budgets by per-replica leases (docs/DESIGN.md, "Budgets"; schema V12 {@code budget_leases}).
 *
 * <p><b>Leases.</b> For each account it serves, this replica holds one lease row: an amount of the
 * plan's included device-ns ({@code allowance_ns}) and of prepaid credits ({@code credit_nmicros}),
 * granted under the account's advisory lock and never more than the funds less every other
 * replica's unexpired lease. The lease is renewed every {@link #RENEW_EVERY} while the account is
 * in use (and at once when a request finds it short), expires {@link #LEASE_TTL} after it was
 * granted, and is returned (deleted) after {@link #IDLE_RETURN} without requests.
 *
 * <p><b>Reservations</b> are made in memory against the lease: allowance first, then credits at the
 * meter's current price (the V7 deduction order). What this replica may still reserve is the lease
 * less the charges settled since the lease's funds were read less the reservations in flight. A
 * renewal snapshots the settled totals <em>before</em> it reads the database, so every charge
 * settled before the snapshot is in the funds it reads (a charge settles after it is committed) and
 * a charge settled later is counted locally, perhaps twice: never too little.
 *
 * <p><b>Not charged in money:</b> a request on a meter with no price version for the account's
 * currency (such charges are stored unpriced and not deducted), and an account that allows postpaid
 * overage. Both are admitted with an unlimited reservation unless the account is suspended.
 *
 * <p><b>Concurrency:</b> the state of one account is guarded by its {@link AccountBudget}'s monitor
 * (held for a few arithmetic operations); database work runs on the one {@code gpumeter-budget}
 * thread, never on a caller's thread.
 */
public final class LeasedBudgets implements Budgets, AutoCloseable {
  private static final Logger log = LoggerFactory.getLogger(LeasedBudgets.class);

  /** How long a lease is valid after it was granted unless renewed. */
  public static final Duration LEASE_TTL = Duration.ofSeconds(10);

  /** How often the leases of accounts in use are renewed. */
  public static final Duration RENEW_EVERY = Duration.ofSeconds(1);

  /** An account without requests for this long has its lease returned. */
  public static final Duration IDLE_RETURN = Duration.ofSeconds(30);

  /**
   * A lease ends locally this long before the database's expiry (the local clock starts before the
   * database's {@code now()}, so this is margin for clock rates only).
   */
  static final long LOCAL_MARGIN_NANOS = Duration.ofSeconds(1).toNanos();

  /** The most one lease holds of either kind, so local sums stay well inside a long. */
  static final long MAX_LEASE = 1L << 60;

  private final DataSource dataSource;
  private final String replica;
  private final LongSupplier nanoTime;
  private final ConcurrentHashMap<Long, AccountBudget> accounts = new ConcurrentHashMap<>();
  private final ConcurrentHashMap<MeterKey, DefaultMeter> meters = new ConcurrentHashMap<>();
  private final ScheduledExecutorService thread;

  /**
   * @param dataSource the billing pool
   * @param replica this process's name in {@code budget_leases} (unique among live replicas)
   * @param nanoTime monotonic clock for lease validity and idleness
   * @param renewInBackground false in tests that renew by hand ({@link #renewAll()})
   */
  public LeasedBudgets(
      DataSource dataSource, String replica, LongSupplier nanoTime, boolean renewInBackground) {
    this.dataSource = Objects.requireNonNull(dataSource, "dataSource");
    this.replica = Objects.requireNonNull(replica, "replica");
    if (replica.isEmpty() || replica.length() > 100) {
      throw new IllegalArgumentException(
          "replica name must be 1-100 characters: '" + replica + "'");
    }
    this.nanoTime = Objects.requireNonNull(nanoTime, "nanoTime");
    this.thread =
        Executors.newSingleThreadScheduledExecutor(
            r -> {
              Thread t = new Thread(r, "gpumeter-budget");
              t.setDaemon(true);
              return t;
            });
    if (renewInBackground) {
      long every = RENEW_EVERY.toMillis();
      thread.scheduleWithFixedDelay(this::renewAllQuietly, every, every, TimeUnit.MILLISECONDS);
    }
  }

  /** This replica's name in {@code budget_leases}. */
  public String replica() {
    return replica;
  }

  @Override
  public Meter meter(String model, String device, String deviceName) {
    return meters.computeIfAbsent(
        new MeterKey(model, device, deviceName), k -> new DefaultMeter(k.model, k.device, k.name));
  }

  @Override
  public CompletableFuture<Reservation> reserve(Meter meter, long accountId, long estimateNs) {
    DefaultMeter m = (DefaultMeter) meter;
    long est = Math.max(0, estimateNs);
    long now = nanoTime.getAsLong();
    AccountBudget a = accounts.get(accountId);
    if (a != null) {
      try {
        Reservation r = a.tryReserve(m, est, now, false);
        if (r != null) {
          return CompletableFuture.completedFuture(r);
        }
      } catch (InsufficientQuotaException e) {
        return CompletableFuture.failedFuture(e);
      }
    }
    // No state, no valid lease, an unknown price, or the lease is short: renew on the budget
    // thread, then try once more (and refuse if it still cannot cover the estimate).
    CompletableFuture<Reservation> f = new CompletableFuture<>();
    thread.execute(
        () -> {
          try {
            AccountBudget b =
                accounts.computeIfAbsent(accountId, id -> new AccountBudget(id, nanoTime));
            BillingException unreachable = null;
            if (b.renewedBefore(now) || !m.pricedFor(b.currency())) {
              try {
                renew(b, m, est);
              } catch (BillingException e) {
                unreachable = e; // a known account that needs no funds is still served
              }
            }
            try {
              f.complete(b.tryReserve(m, est, nanoTime.getAsLong(), true));
            } catch (BillingException e) {
              throw unreachable != null ? unreachable : e;
            }
          } catch (RuntimeException e) {
            f.completeExceptionally(e);
          }
        });
    return f;
  }

  /** Renews every lease in use and returns those idle (the budget thread's periodic task). */
  public void renewAll() {
    long now = nanoTime.getAsLong();
    List<AccountBudget> idle = new ArrayList<>();
    for (AccountBudget a : accounts.values()) {
      if (a.idleSince(now, IDLE_RETURN.toNanos())) {
        idle.add(a);
      } else {
        renew(a, null, 0);
      }
    }
    for (AccountBudget a : idle) {
      if (a.retireIfIdle(now, IDLE_RETURN.toNanos())) {
        accounts.remove(a.id, a);
        returnLease(a.id);
      }
    }
  }

  /**
   * Renews the lease of account {@code accountId} now, on the budget thread, if this replica holds
   * one: a suspension, a resumption, a credit grant or a plan change committed anywhere reaches
   * every replica through {@code db.InvalidationListener} (notification {@code account:<id>},
   * migration V18) instead of at the next periodic renewal. Returns at once; does nothing after
   * {@link #close()}.
   */
  public void renewSoon(long accountId) {
    runOnBudgetThread(
        () -> {
          AccountBudget a = accounts.get(accountId);
          if (a != null) {
            try {
              renew(a, null, 0);
            } catch (RuntimeException e) {
              log.warn("budget lease of account {} not renewed after a change", accountId, e);
            }
          }
        });
  }

  /**
   * Renews every lease now, on the budget thread (after notifications may have been missed).
   * Returns at once; does nothing after {@link #close()}.
   */
  public void renewAllSoon() {
    runOnBudgetThread(this::renewAllQuietly);
  }

  private void runOnBudgetThread(Runnable task) {
    try {
      thread.execute(task);
    } catch (java.util.concurrent.RejectedExecutionException closed) {
      log.debug("budget renewal after a change skipped: closed");
    }
  }

  private void renewAllQuietly() {
    try {
      renewAll();
    } catch (RuntimeException e) {
      log.warn("budget lease renewal failed; leases run out {} after their grant", LEASE_TTL, e);
    }
  }

  /**
   * Renews {@code a}'s lease (and the prices of the meters it uses, {@code extra} included) from
   * the database; {@code needNs} is a waiting request's estimate, to ask at least that much.
   *
   * @throws BillingException if the database cannot be reached (the old lease stays, and runs out
   *     at its local end)
   */
  void renew(AccountBudget a, DefaultMeter extra, long needNs) {
    AccountBudget.Snapshot snap = a.snapshot(nanoTime.getAsLong());
    try (Connection c = dataSource.getConnection()) {
      c.setAutoCommit(false);
      try {
        // Stored charges settled first, in this transaction and before the account's lock (the
        // settlement's lock order): the funds read below are net of every charge stored so far.
        Settlement.settle(c);
        Funds f = readFunds(c, a.id);
        if (f == null) {
          c.rollback();
          a.unknownAccount(snap);
          return;
        }
        List<DefaultMeter> used = new ArrayList<>(a.meters());
        if (extra != null && !used.contains(extra)) {
          used.add(extra);
        }
        Map<DefaultMeter, Long> prices = new java.util.HashMap<>();
        for (DefaultMeter m : used) {
          prices.put(m, price(c, m, f.currency));
        }
        long price = extra == null ? -1 : prices.get(extra);
        AccountBudget.Grant g =
            a.beginGrant(
                snap,
                f.allowanceNs - f.othersAllowanceNs,
                f.creditNm - f.othersCreditNm,
                f.othersActive,
                needNs,
                price > 0 ? satMul(needNs, price) : 0);
        long leaseA = g.allowanceNs();
        long leaseC = g.creditNm();
        try (PreparedStatement ps =
            c.prepareStatement(
                "INSERT INTO budget_leases (account_id, replica, allowance_ns, credit_nmicros,"
                    + " granted_at, expires_at) VALUES (?, ?, ?, ?, now(), now() + ?::interval)"
                    + " ON CONFLICT (account_id, replica) DO UPDATE SET allowance_ns ="
                    + " EXCLUDED.allowance_ns, credit_nmicros = EXCLUDED.credit_nmicros,"
                    + " granted_at = EXCLUDED.granted_at, expires_at = EXCLUDED.expires_at")) {
          ps.setLong(1, a.id);
          ps.setString(2, replica);
          ps.setLong(3, leaseA);
          ps.setBigDecimal(4, BigDecimal.valueOf(leaseC));
          ps.setString(5, LEASE_TTL.toMillis() + " milliseconds");
          ps.executeUpdate();
        }
        c.commit();
        for (Map.Entry<DefaultMeter, Long> e : prices.entrySet()) {
          e.getKey().setPrice(f.currency, e.getValue());
        }
        a.leased(
            snap,
            f.suspended,
            f.postpaid,
            f.currency,
            leaseA,
            leaseC,
            snap.startNanos() + LEASE_TTL.toNanos() - LOCAL_MARGIN_NANOS);
      } catch (SQLException | RuntimeException e) {
        c.rollback();
        throw e;
      }
    } catch (SQLException e) {
      throw new BillingException("budget lease of account " + a.id + " not renewed", e);
    }
  }

  /**
   * This replica's part of what is free: all of it while no other replica holds a lease, else an
   * even share, but at least what is needed now when that much is free.
   */
  static long share(long free, int othersActive, long need) {
    long f = Math.max(0, free);
    long s = othersActive == 0 ? f : Math.max(f / (othersActive + 1), Math.min(f, need));
    return Math.min(s, MAX_LEASE);
  }

  private record Funds(
      boolean suspended,
      boolean postpaid,
      String currency,
      long allowanceNs,
      long creditNm,
      long othersAllowanceNs,
      long othersCreditNm,
      int othersActive) {}

  /** The account's funds under its advisory lock (held to the end of the transaction). */
  private Funds readFunds(Connection c, long accountId) throws SQLException {
    try (PreparedStatement ps =
        c.prepareStatement("SELECT pg_advisory_xact_lock(hashtext('account:' || ?))")) {
      ps.setLong(1, accountId);
      ps.execute();
    }
    try (PreparedStatement ps =
        c.prepareStatement(
            "SELECT a.status = 'suspended', a.postpaid_allowed, a.currency,"
                // the device-ns the pool covers at least, whatever the class: what is left of it
                // in ppm-ns (V20) over the plan's largest weight, rounded down
                + " coalesce((SELECT div(greatest(0, p.included_ns::numeric * 1000000"
                + "   - coalesce((SELECT u.used_pool FROM allowance_used u"
                + "   WHERE u.account_id = a.id"
                + "   AND u.period = date_trunc('month', now(), 'UTC')::date), 0)),"
                + "   greatest(1000000, (SELECT max(w.weight_ppm) FROM plan_class_weights w"
                + "   WHERE w.plan_id = p.id)))::bigint"
                + "   FROM subscriptions s JOIN plans p ON p.id = s.plan_id"
                + "   WHERE s.account_id = a.id AND s.active @> now()), 0),"
                + " coalesce((SELECT sum(r.remaining_nmicros) FROM grant_remaining r"
                + "   WHERE r.account_id = a.id AND (r.expires_at IS NULL OR r.expires_at > now())),"
                + "   0),"
                + " coalesce(sum(l.allowance_ns), 0), coalesce(sum(l.credit_nmicros), 0),"
                + " count(l.replica)"
                + " FROM accounts a LEFT JOIN budget_leases l ON l.account_id = a.id"
                + "   AND l.replica <> ? AND l.expires_at > now()"
                + " WHERE a.id = ? GROUP BY a.id")) {
      ps.setString(1, replica);
      ps.setLong(2, accountId);
      try (ResultSet rs = ps.executeQuery()) {
        if (!rs.next()) {
          return null;
        }
        return new Funds(
            rs.getBoolean(1),
            rs.getBoolean(2),
            rs.getString(3),
            rs.getLong(4),
            capped(rs.getBigDecimal(5)),
            rs.getLong(6),
            capped(rs.getBigDecimal(7)),
            rs.getInt(8));
      }
    }
  }

  /** Nano-micro-units per device-ns (= micro-units per device-second) now, or -1 if unpriced. */
  private static long price(Connection c, DefaultMeter m, String currency) throws SQLException {
    try (PreparedStatement ps =
        c.prepareStatement(
            "SELECT v.price_micros_per_s FROM price_versions v"
                + " WHERE v.currency = ? AND v.device_class = device_class(?, ?)"
                + " AND v.model IN (?, '*') AND v.effective @> now()"
                + " ORDER BY v.model = '*' LIMIT 1")) {
      ps.setString(1, currency);
      ps.setString(2, m.device);
      ps.setString(3, m.deviceName);
      ps.setString(4, m.model);
      try (ResultSet rs = ps.executeQuery()) {
        return rs.next() ? rs.getLong(1) : -1;
      }
    }
  }

  private void returnLease(long accountId) {
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement("DELETE FROM budget_leases WHERE account_id = ? AND replica = ?")) {
      ps.setLong(1, accountId);
      ps.setString(2, replica);
      ps.executeUpdate();
    } catch (SQLException e) {
      log.warn("budget lease of account {} not returned; it expires by itself", accountId, e);
    }
  }

  private static long capped(BigDecimal v) {
    if (v == null || v.signum() <= 0) {
      return 0;
    }
    return v.compareTo(BigDecimal.valueOf(MAX_LEASE)) >= 0 ? MAX_LEASE : v.longValueExact();
  }

  static long satAdd(long a, long b) {
    long r = a + b;
    return ((a ^ r) & (b ^ r)) < 0 ? Long.MAX_VALUE : r;
  }

  static long satMul(long a, long b) {
    long hi = Math.multiplyHigh(a, b);
    long lo = a * b;
    return (hi == 0 && lo >= 0) ? lo : Long.MAX_VALUE;
  }

  /** Returns this replica's leases and stops the budget thread. */
  @Override
  public void close() {
    thread.shutdownNow();
    try {
      thread.awaitTermination(5, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps = c.prepareStatement("DELETE FROM budget_leases WHERE replica = ?")) {
      ps.setString(1, replica);
      ps.executeUpdate();
    } catch (SQLException e) {
      log.warn("budget leases of replica {} not returned; they expire by themselves", replica, e);
    }
  }

  private record MeterKey(String model, String device, String name) {}

  /** A served model's price key, with its current price per currency (set by renewals). */
  static final class DefaultMeter implements Meter {
    final String model;
    final String device;
    final String deviceName;
    private final ConcurrentHashMap<String, Long> prices = new ConcurrentHashMap<>();
    private volatile long nsPerToken = DEFAULT_NS_PER_TOKEN;

    DefaultMeter(String model, String device, String deviceName) {
      this.model = model;
      this.device = device;
      this.deviceName = deviceName;
    }

    @Override
    public String model() {
      return model;
    }

    @Override
    public void observeStep(long measuredNs, int tokens) {
      if (tokens <= 0 || measuredNs <= 0) {
        return;
      }
      long sample = measuredNs / tokens;
      long now = nsPerToken;
      nsPerToken = sample >= now ? sample : now - (now - sample) / 8;
    }

    @Override
    public long nsPerToken() {
      return nsPerToken;
    }

    boolean pricedFor(String currency) {
      return currency != null && prices.containsKey(currency);
    }

    /** The price in {@code currency}, -1 unpriced, or -2 not known yet. */
    long price(String currency) {
      Long p = currency == null ? null : prices.get(currency);
      return p == null ? -2 : p;
    }

    void setPrice(String currency, long price) {
      prices.put(currency, price);
    }
  }
}
