package io.gpumeter.billing;

import com.github.benmanes.caffeine.cache.Ticker;
import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.db.InvalidationListener;
import io.gpumeter.billing.keys.ApiKeys;
import io.gpumeter.billing.ledger.Ledger;
import io.gpumeter.billing.pricing.PriceBook;
import io.gpumeter.billing.pricing.PriceCache;
import io.gpumeter.billing.reconcile.Reconciliation;
import io.gpumeter.billing.retention.MaintenanceTask;
import io.gpumeter.billing.usage.UsageQueries;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageSink;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The billing module wired together: the database ({@code db}), API keys ({@code keys}), the ledger
 * ({@code ledger}: writer → breaker/retry → PostgreSQL | outbox → replayer), usage queries ({@code
 * usage}), partition maintenance ({@code retention}) and reconciliation ({@code reconcile}). Close
 * it once: the ledger drains first, then the replayer and the outbox stop, the reconciliation
 * totals are flushed, and the database stops (if this object started it).
 *
 * <p>Start-up: the database must be reachable (migrations run) and, in durable mode, durable itself
 * ({@link DatabaseDurability}, unless {@link DatabaseConfig#allowUnsafeDatabase()}); the outbox
 * directory is opened and locked (one process per outbox), and a backlog left by a crash is
 * replayed at once by the replayer; partition maintenance and credit expiry ({@link
 * Accounting#expireCredits()}) run once, then every {@link RetentionConfig#interval()}.
 */
public final class Billing implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(Billing.class);

  /**
   * Longest wait for a cache invalidation; a revocation elsewhere reaches this cache about as fast.
   */
  private static final Duration INVALIDATION_POLL = Duration.ofMillis(250);

  /**
   * How long a reconciliation report waits for the local commit log to be shipped to PostgreSQL
   * before it refuses ({@link ShippingLagException}) rather than count the lag as drift.
   */
  static final Duration RECONCILE_SHIP_WAIT = Duration.ofSeconds(10);

  /**
   * How long a usage or request-log read waits for the charges acknowledged before it to be shipped
   * from the local commit log (read-your-writes) before it refuses with {@link
   * ShippingLagException} rather than answer short.
   */
  public static final Duration READ_SHIP_WAIT = Duration.ofSeconds(5);

  private static final Duration INVALIDATION_RETRY = Duration.ofSeconds(1);

  /** How often the settler thread prices and deducts the stored charges (V25). */
  private static final Duration SETTLE_EVERY = Duration.ofSeconds(1);

  private final Database database;
  private final boolean ownsDatabase;
  private final ApiKeys apiKeys;
  private final InvalidationListener invalidations;
  private final Ledger ledger;
  private final UsageQueries usage;
  private final Accounting accounting;
  private final Reconciliation reconciliation;
  private final MaintenanceTask maintenance;
  private final ScheduledExecutorService maintenanceScheduler;
  private final DatabaseDurability databaseDurability;
  private final ScheduledExecutorService measuredFlusher;
  private final ScheduledExecutorService settler;
  private final io.gpumeter.billing.ledger.ChargeVoids chargeVoids;
  private final IdempotencyKeys idempotencyKeys;
  private final io.gpumeter.billing.budget.LeasedBudgets budgets;
  private final PriceCache prices;
  private volatile boolean closed;

  private Billing(Database database, boolean ownsDatabase, BillingConfig config) {
    this.database = database;
    this.ownsDatabase = ownsDatabase;
    this.databaseDurability = checkDurability(database, config.ledger().durability());
    this.apiKeys = new ApiKeys(database.dataSource(), config.apiKeyCache(), Ticker.systemTicker());
    this.usage = new UsageQueries(database.dataSource(), this::awaitReadYourWrites);
    this.idempotencyKeys =
        new io.gpumeter.billing.idempotency.JdbcIdempotencyKeys(
            database.dataSource(), config.clock());
    this.accounting = new Accounting(database.dataSource(), config.clock());
    // A fresh name per process: a dead replica's leases expire by themselves.
    this.budgets =
        new io.gpumeter.billing.budget.LeasedBudgets(
            database.dataSource(),
            "replica-" + java.util.UUID.randomUUID(),
            System::nanoTime,
            true);
    LedgerConfig lc = config.ledger();
    // Measured time rides with the ledger's batches (same transaction or outbox group); a report
    // first has the ledger write what is pending.
    this.reconciliation =
        Reconciliation.recording(database.dataSource(), config.clock(), this::flushMeasured);
    this.ledger =
        Ledger.open(
            database.ledgerDataSource(),
            outboxDirectory(database.config(), lc),
            lc,
            reconciliation.pendingMeasuredTime());
    // After the ledger: its outbox directory is created and locked, and holds the void journal.
    try {
      this.chargeVoids =
          new io.gpumeter.billing.ledger.ChargeVoids(
              database.dataSource(), 1000, outboxDirectory(database.config(), lc));
    } catch (RuntimeException e) {
      ledger.close();
      throw e;
    }
    Duration flushEvery = config.reconciliationFlushInterval();
    if (flushEvery.isZero()) {
      this.measuredFlusher = null;
    } else {
      this.measuredFlusher =
          Executors.newSingleThreadScheduledExecutor(
              t -> {
                Thread th = new Thread(t, "gpumeter-measured-flush");
                th.setDaemon(true);
                return th;
              });
      measuredFlusher.scheduleWithFixedDelay(
          ledger::flushMeasured,
          flushEvery.toMillis(),
          flushEvery.toMillis(),
          TimeUnit.MILLISECONDS);
    }
    // Prices and deducts the stored charges off the ledger's write path (V25; every money read
    // also settles first, so this only keeps each of those runs small).
    this.settler =
        Executors.newSingleThreadScheduledExecutor(
            t -> {
              Thread th = new Thread(t, "gpumeter-settler");
              th.setDaemon(true);
              return th;
            });
    settler.scheduleWithFixedDelay(
        () -> settleQuietly(database.dataSource()),
        SETTLE_EVERY.toMillis(),
        SETTLE_EVERY.toMillis(),
        TimeUnit.MILLISECONDS);
    RetentionConfig retention = config.retention();
    if (retention != null) {
      this.maintenance =
          new MaintenanceTask(database.maintenanceDataSource(), retention, config.clock());
      this.maintenanceScheduler =
          Executors.newSingleThreadScheduledExecutor(
              t -> {
                Thread th = new Thread(t, "gpumeter-maintenance");
                th.setDaemon(true);
                return th;
              });
      runMaintenanceQuietly();
      long every = retention.interval().toMillis();
      maintenanceScheduler.scheduleWithFixedDelay(
          this::runMaintenanceQuietly, every, every, TimeUnit.MILLISECONDS);
    } else {
      this.maintenance = null;
      this.maintenanceScheduler = null;
    }
    // Last, so a failed start leaves no listener behind. Revocations by other replicas or by the
    // command line reach this cache through the database (one pool connection kept for it).
    this.prices = new PriceCache(new PriceBook(database.dataSource()));
    try {
      prices.reload();
    } catch (BillingException e) {
      // the listener's first LISTEN runs the gap handler, which reloads
      LOG.warn("price versions not loaded at start; receipts are priced once they are", e);
    }
    this.invalidations =
        InvalidationListener.create(database.dataSource(), INVALIDATION_POLL, INVALIDATION_RETRY)
            .subscribe("api_key", apiKeys::invalidateCachedHash, apiKeys::invalidateCache)
            .subscribe("price_version", id -> prices.reloadSoon(), prices::reloadSoon)
            .subscribe(
                "account", id -> budgets.renewSoon(Long.parseLong(id)), budgets::renewAllSoon)
            .start();
  }

  /**
   * Starts the database (see {@link Database#start}) and the ledger writer with default settings.
   */
  public static Billing start(DatabaseConfig databaseConfig) {
    return start(databaseConfig, BillingConfig.defaults());
  }

  public static Billing start(DatabaseConfig databaseConfig, LedgerConfig ledgerConfig) {
    Objects.requireNonNull(ledgerConfig, "ledgerConfig");
    return start(databaseConfig, BillingConfig.defaults().withLedger(ledgerConfig));
  }

  /**
   * Starts the database and everything on it.
   *
   * @throws BillingException if the database cannot be started, reached or migrated, or is not
   *     durable in durable mode (see {@link DatabaseDurability})
   * @throws IllegalStateException if the outbox directory is in use by another process
   */
  public static Billing start(DatabaseConfig databaseConfig, BillingConfig config) {
    Objects.requireNonNull(config, "config");
    Database db = Database.start(databaseConfig);
    try {
      return new Billing(db, true, config);
    } catch (RuntimeException e) {
      db.close();
      throw e;
    }
  }

  /**
   * Reads the database's durability settings; in durable mode, refuses a database that would lose
   * acknowledged charges in an OS crash unless {@link DatabaseConfig#allowUnsafeDatabase()}.
   */
  private static DatabaseDurability checkDurability(Database database, Durability mode) {
    DatabaseDurability d = database.readDurability();
    if (d.safe() || mode != Durability.DURABLE) {
      return d;
    }
    String off = String.join(", ", d.problems());
    if (!database.config().allowUnsafeDatabase()) {
      throw new BillingException(
          "refusing durable mode: the billing database has "
              + off
              + ", so a charge acknowledged as durable can be lost by an OS crash or a power loss."
              + " Turn these settings on in the database, or set ledger.allow_unsafe_database=true"
              + " to run anyway");
    }
    LOG.warn(
        "UNSAFE DATABASE: the billing database has {}; ledger.allow_unsafe_database=true lets"
            + " durable mode run anyway, but a charge acknowledged as durable can be lost by an OS"
            + " crash or a power loss",
        off);
    return d.withUnsafeAllowed();
  }

  /**
   * Billing on a database started elsewhere; {@link #close()} leaves the database running.
   *
   * @throws IllegalStateException if the outbox directory is in use by another process
   */
  public static Billing open(Database database, BillingConfig config) {
    return new Billing(Objects.requireNonNull(database, "database"), false, config);
  }

  /**
   * The outbox folder: {@link LedgerConfig#outboxDirectory()} if set, else {@code outbox} beside
   * the database's data folder ({@code ./data/outbox} for the default {@code ./data/postgres}). Not
   * inside it: {@code initdb} needs an empty folder, and backups of the database folder should not
   * carry the outbox.
   */
  public static Path outboxDirectory(DatabaseConfig db, LedgerConfig ledger) {
    return ledger.outboxDirectory() != null
        ? ledger.outboxDirectory()
        : db.dataDirectory().resolveSibling("outbox");
  }

  /**
   * API keys: authentication for the server (cached per {@link BillingConfig#apiKeyCache()}), and
   * create, list, revoke and rotate for the admin API. A revocation made here takes effect here at
   * once.
   */
  public ApiKeys apiKeys() {
    return apiKeys;
  }

  /** The {@code UsageSink} the schedulers publish to: the ledger's writer. */
  public UsageSink ledger() {
    return ledger.sink();
  }

  /**
   * The database's {@code fsync}, {@code full_page_writes} and {@code synchronous_commit}, as read
   * when this object started.
   */
  public DatabaseDurability databaseDurability() {
    return databaseDurability;
  }

  /**
   * This replica's id (the outbox directory's owner id, stable across restarts on that directory):
   * what {@code reconcile --replica} takes and what the per-replica lines of a reconciliation
   * report name.
   */
  public java.util.UUID replicaId() {
    return ledger.replicaId();
  }

  /** Counters of the ledger's writer since start. */
  public LedgerStats ledgerStats() {
    return ledger.stats();
  }

  /**
   * Voids the charge of {@code requestId}: its client did not get the answer (DESIGN.md invariant
   * 15). Idempotent; may come before or after the charge is stored. The charge stays in {@code
   * usage_records} for audit, leaves the usage totals, and reconciliation counts its time as
   * voided. Retried until stored (see {@link io.gpumeter.billing.ledger.ChargeVoids}).
   */
  public CompletableFuture<Void> voidCharge(String requestId, VoidReason reason) {
    return chargeVoids.voidCharge(requestId, reason);
  }

  /** Stored {@code Idempotency-Key}s (migration V9; pruned by partition maintenance). */
  public IdempotencyKeys idempotencyKeys() {
    return idempotencyKeys;
  }

  public UsageQueries usage() {
    return usage;
  }

  /**
   * Budgets enforced before the work: admission reservations against this replica's leases of each
   * account's funds (docs/DESIGN.md, "Budgets").
   */
  public Budgets budgets() {
    return budgets;
  }

  /**
   * Accounts, prices, plans, credits, balances and invoices (blocking database calls). Its {@link
   * Accounting#chargeCost(String)} gives a request's priced cost once its charge is stored.
   */
  public Accounting accounting() {
    return accounting;
  }

  /**
   * The priced cost of the stored charge of {@code requestId}: exact and rounded amounts, currency
   * and price version; empty until the charge is stored or when no price version covered it. Blocks
   * on the database.
   */
  public java.util.Optional<ChargeCost> chargeCost(String requestId) {
    return accounting.chargeCost(requestId);
  }

  /**
   * The receipt of a finished request for an account whose currency is {@code currency}: the cost
   * its charge is stored with, computed in memory (no database round trip) by the trigger's rule
   * from the cached price versions ({@code pricing.PriceCache}: reloaded when any process changes a
   * version, so a receipt priced within about a second of a price change may differ from the stored
   * charge). Empty when no version covers the record (it is stored unpriced).
   */
  public java.util.Optional<ChargeCost> receiptCost(UsageRecord record, String currency) {
    return prices.price(record, currency);
  }

  /**
   * Reports drift between measured device time and the ledger; a report first writes what {@link
   * #measuredTime()} holds.
   */
  public Reconciliation reconciliation() {
    return reconciliation;
  }

  /**
   * Where the server records measured, charged and system device time per model and device. The
   * ledger makes it durable with its batches (in the same transaction as the usage records, or in
   * the same outbox group), and at least every {@link LedgerConfig#replayInterval()}.
   */
  public MeasuredTimeRecorder measuredTime() {
    return reconciliation.measuredTime();
  }

  /**
   * Re-applies the charges set aside (the intact records of quarantined outbox segments and the
   * dead-letter entries), idempotently, and says what was applied, already present and still
   * refused. Blocks on the database; call it off event loops.
   *
   * @throws BillingException if the database failed part-way (run it again)
   */
  public SetAsideReplay replaySetAside() {
    return ledger.replaySetAside();
  }

  /** The cross-replica cache invalidations this instance listens to (for tests). */
  InvalidationListener invalidations() {
    return invalidations;
  }

  /** The partition maintenance task, or null when retention is disabled in the config. */
  public MaintenanceTask maintenance() {
    return maintenance;
  }

  /** Whether the database is embedded and started here (else external, or attached to). */
  public boolean isDatabaseEmbedded() {
    return database.isEmbedded();
  }

  /** The JDBC URL of the billing database (no password in it), for logs. */
  public String databaseUrl() {
    return database.jdbcUrl();
  }

  /**
   * Cheap admission check for every new completion (volatile reads, no allocation): false when a
   * charge could not be made durable now. {@link #health()} says why.
   */
  public boolean canAcceptWork() {
    return !closed && ledger.isAccepting();
  }

  /**
   * The ledger's readiness with its reason and numbers, for metrics and the refusal of new work.
   * Cheap: no database round trip; {@link LedgerHealth#databaseReachable()} is what the circuit
   * breaker knows.
   */
  public LedgerHealth health() {
    return ledger.health(closed ? "billing is closed" : null, null);
  }

  /**
   * {@link #health()} after asking the database whether it answers (unless the circuit breaker
   * already knows it is down): for {@code /readyz}. Blocks the calling thread for up to the pool's
   * connection timeout plus {@code databaseCheckTimeout}; call it off event loops. A database that
   * does not answer makes the health degraded, not unready: charges go to the outbox.
   */
  public LedgerHealth health(Duration databaseCheckTimeout) {
    Objects.requireNonNull(databaseCheckTimeout, "databaseCheckTimeout");
    LedgerHealth cheap = health();
    if (!cheap.ready() || cheap.degraded()) {
      return cheap;
    }
    String problem = database.checkReachable(databaseCheckTimeout);
    return problem == null ? health() : ledger.health(closed ? "billing is closed" : null, problem);
  }

  /**
   * Writes the measured time pending now (a reconciliation report calls it first) and, with a local
   * commit point, waits for the commit log to be shipped, so that what is still on its way to
   * PostgreSQL is not reported as drift.
   *
   * @throws ShippingLagException if the log was not shipped within {@link #RECONCILE_SHIP_WAIT}
   */
  private void flushMeasured() {
    ledger.flushMeasured();
    if (!ledger.awaitAcknowledgedShipped(RECONCILE_SHIP_WAIT)) {
      throw new ShippingLagException(
          ledger.unshippedRecords()
              + " charges in the local commit log were not shipped to the billing database within "
              + RECONCILE_SHIP_WAIT.toSeconds()
              + " s; a reconciliation now would count them as drift. Retry later.");
    }
  }

  /**
   * Read-your-writes for the usage reads ({@link #usage()}): with a local commit point, waits up to
   * {@link #READ_SHIP_WAIT} until every charge acknowledged before the call is in PostgreSQL; at
   * once with commit point postgres.
   *
   * @throws ShippingLagException if they were not shipped in time (503 with Retry-After)
   */
  private void awaitReadYourWrites() {
    Ledger l = ledger; // null while the constructor runs: nothing acknowledged yet
    if (l != null && !l.awaitAcknowledgedShipped(READ_SHIP_WAIT)) {
      throw new ShippingLagException(
          l.unshippedRecords()
              + " charges in the local commit log were not shipped to the billing database within "
              + READ_SHIP_WAIT.toSeconds()
              + " s; an answer now could miss charges already acknowledged. Retry later.");
    }
  }

  /** The local commit log's size on disk in bytes (0 with commit point postgres). */
  public long commitLogBytes() {
    return ledger.commitLogBytes();
  }

  /** Charges committed to the local commit log and not yet in PostgreSQL (0 with postgres). */
  public long unshippedRecords() {
    return ledger.unshippedRecords();
  }

  /**
   * Waits until every charge committed to the local commit log so far is in PostgreSQL, at most
   * {@code deadline}; true at once with commit point postgres.
   */
  public boolean awaitShipped(Duration deadline) {
    return ledger.awaitShipped(deadline);
  }

  private static void settleQuietly(javax.sql.DataSource dataSource) {
    try {
      io.gpumeter.billing.pricing.Settlement.settle(dataSource);
    } catch (java.sql.SQLException | RuntimeException e) {
      LOG.warn("Settling the stored charges failed (retried in {})", SETTLE_EVERY, e);
    }
  }

  private void runMaintenanceQuietly() {
    try {
      maintenance.run();
    } catch (RuntimeException e) {
      LOG.warn("Partition maintenance failed (retried at the next run)", e);
    }
    try {
      int expired = accounting.expireCredits();
      if (expired > 0) {
        LOG.info("Credit expiry: {} grant(s) expired", expired);
      }
    } catch (RuntimeException e) {
      LOG.warn("Credit expiry failed (retried at the next run)", e);
    }
  }

  /**
   * Drains the ledger (to the database, or to the outbox if it is down), stops the replayer (what
   * is left in the outbox is replayed at the next start), closes the outbox, flushes the
   * reconciliation totals, and stops the database if this object started it. Idempotent.
   */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    List<Runnable> steps = new ArrayList<>();
    steps.add(invalidations::close);
    steps.add(budgets::close); // returns this replica's leases
    steps.add(prices::close);
    if (measuredFlusher != null) {
      steps.add(measuredFlusher::shutdownNow);
    }
    steps.add(chargeVoids::close);
    steps.add(settler::shutdownNow);
    steps.add(ledger::close); // drains the writer, then writes the measured time left
    if (maintenanceScheduler != null) {
      steps.add(maintenanceScheduler::shutdownNow);
    }
    if (ownsDatabase) {
      steps.add(database::close);
    }
    for (Runnable step : steps) {
      try {
        step.run();
      } catch (RuntimeException e) {
        LOG.error("Closing billing", e);
      }
    }
  }
}
