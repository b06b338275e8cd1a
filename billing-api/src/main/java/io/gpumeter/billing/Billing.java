package io.gpumeter.billing;

import io.github.resilience4j.circuitbreaker.CircuitBreaker;
import io.gpumeter.billing.internal.JdbcLedgerStore;
import io.gpumeter.billing.internal.ResilientLedgerStore;
import io.gpumeter.billing.outbox.Outbox;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The billing module wired together: the database, API keys, the ledger (writer → breaker/retry →
 * PostgreSQL | outbox → replayer), usage queries, partition maintenance and reconciliation. Close
 * it once: the ledger drains first, then the replayer and the outbox stop, the reconciliation
 * totals are flushed, and the database stops (if this object started it).
 *
 * <p>Start-up: the database must be reachable (migrations run); the outbox directory is opened
 * and locked (one process per outbox), and a backlog left by a crash is replayed at once by the
 * replayer; partition maintenance runs once, then every {@link RetentionConfig#interval()}.
 */
public final class Billing implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(Billing.class);

  private final Database database;
  private final boolean ownsDatabase;
  private final ApiKeys apiKeys;
  private final Outbox outbox;
  private final ResilientLedgerStore store;
  private final LedgerWriter ledger;
  private final UsageQueries usage;
  private final Reconciliation reconciliation;
  private final ReconciliationRecorder recorder;
  private final MaintenanceTask maintenance;
  private final ScheduledExecutorService maintenanceScheduler;
  private volatile boolean closed;

  private Billing(Database database, boolean ownsDatabase, BillingConfig config) {
    this.database = database;
    this.ownsDatabase = ownsDatabase;
    this.apiKeys = new ApiKeys(database.dataSource());
    this.usage = new UsageQueries(database.dataSource());
    this.reconciliation = new Reconciliation(database.dataSource());
    LedgerConfig lc = config.ledger();
    Path outboxDir = outboxDirectory(database.config(), lc);
    this.outbox = Outbox.open(outboxDir, lc.outboxMaxBytes(), lc.outboxSegmentBytes());
    ResilientLedgerStore s = null;
    LedgerWriter w = null;
    ReconciliationRecorder r = null;
    try {
      JdbcLedgerStore jdbc = new JdbcLedgerStore(database.ledgerDataSource());
      s = new ResilientLedgerStore(jdbc, jdbc::ping, outbox, lc).start();
      w = new LedgerWriter(s, lc);
      r =
          new ReconciliationRecorder(
              database.dataSource(), config.clock(), config.reconciliationFlushInterval());
    } catch (RuntimeException e) {
      if (w != null) {
        w.close();
      }
      if (s != null) {
        s.close();
      }
      outbox.close();
      throw e;
    }
    this.store = s;
    this.ledger = w;
    this.recorder = r;
    RetentionConfig retention = config.retention();
    if (retention != null) {
      this.maintenance = new MaintenanceTask(database.dataSource(), retention, config.clock());
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
    LOG.info(
        "Billing ledger: {} mode, outbox {} (max {} bytes, {} bytes waiting)",
        lc.durability(),
        outboxDir,
        lc.outboxMaxBytes(),
        outbox.bytes());
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
   * @throws BillingException if the database cannot be started, reached or migrated
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
   * Billing on a database started elsewhere; {@link #close()} leaves the database running.
   *
   * @throws IllegalStateException if the outbox directory is in use by another process
   */
  public static Billing open(Database database, BillingConfig config) {
    return new Billing(Objects.requireNonNull(database, "database"), false, config);
  }

  /**
   * The outbox folder: {@link LedgerConfig#outboxDirectory()} if set, else {@code outbox} beside
   * the database's data folder ({@code ./data/outbox} for the default {@code ./data/postgres}).
   * Not inside it: {@code initdb} needs an empty folder, and backups of the database folder should
   * not carry the outbox.
   */
  public static Path outboxDirectory(DatabaseConfig db, LedgerConfig ledger) {
    return ledger.outboxDirectory() != null
        ? ledger.outboxDirectory()
        : db.dataDirectory().resolveSibling("outbox");
  }

  public Database database() {
    return database;
  }

  public ApiKeys apiKeys() {
    return apiKeys;
  }

  /** The {@code UsageSink} the schedulers publish to. */
  public LedgerWriter ledger() {
    return ledger;
  }

  public UsageQueries usage() {
    return usage;
  }

  /** Reports drift between measured device time and the ledger. */
  public Reconciliation reconciliation() {
    return reconciliation;
  }

  /** Where the server records measured, charged and system device time per model and device. */
  public ReconciliationRecorder reconciliationRecorder() {
    return recorder;
  }

  /** The partition maintenance task, or null when retention is disabled in the config. */
  public MaintenanceTask maintenance() {
    return maintenance;
  }

  public Outbox outbox() {
    return outbox;
  }

  ResilientLedgerStore store() {
    return store;
  }

  /**
   * Cheap admission check for every new completion (volatile reads, no allocation): false when a
   * charge could not be made durable now. {@link #health()} says why.
   */
  public boolean canAcceptWork() {
    return !closed && ledger.isAccepting();
  }

  /** The ledger's readiness with its reason and numbers, for {@code /readyz} and metrics. */
  public LedgerHealth health() {
    ResilientLedgerStore.Status st = store.status();
    LedgerConfig lc = ledger.config();
    int depth = ledger.queueDepth();
    boolean degraded = st.breakerState() != CircuitBreaker.State.CLOSED;
    boolean ready;
    String reason;
    if (closed) {
      ready = false;
      reason = "billing is closed";
    } else if (depth >= lc.queueCapacity()) {
      ready = false;
      reason = "the ledger queue is full (" + depth + " records waiting)";
    } else if (!st.accepting()) {
      ready = false;
      reason = st.refusalReason();
    } else if (degraded) {
      ready = true;
      reason =
          "degraded: the billing database is unavailable (circuit breaker "
              + st.breakerState()
              + (st.lastError() != null ? ", " + st.lastError() : "")
              + "); charges go to the outbox ("
              + st.outboxBytes()
              + " of "
              + st.outboxMaxBytes()
              + " bytes used)";
    } else if (st.outboxBytes() > 0) {
      ready = true;
      reason = "ok; replaying " + st.outboxBytes() + " bytes from the outbox";
    } else {
      ready = true;
      reason = "ok";
    }
    return new LedgerHealth(
        ready,
        degraded,
        reason,
        lc.durability(),
        st.breakerState().name(),
        depth,
        lc.queueCapacity(),
        st.outboxBytes(),
        st.outboxMaxBytes(),
        st.outboxedRecords(),
        st.replayedRecords(),
        st.damagedFrames(),
        st.deadLetteredRecords(),
        st.lastError());
  }

  private void runMaintenanceQuietly() {
    try {
      maintenance.run();
    } catch (RuntimeException e) {
      LOG.warn("Partition maintenance failed (retried at the next run)", e);
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
    steps.add(ledger::close);
    steps.add(store::close);
    steps.add(outbox::close);
    steps.add(recorder::close);
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
