package io.gpumeter.billing.db;

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.DatabaseDurability;
import java.io.IOException;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;
import java.util.OptionalInt;
import java.util.OptionalLong;
import java.util.concurrent.atomic.AtomicBoolean;
import javax.sql.DataSource;
import org.flywaydb.core.Flyway;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The billing database: an external PostgreSQL, or an {@link EmbeddedPostmaster embedded} one
 * started here, behind HikariCP pools, migrated to the current schema ({@code
 * classpath:db/migration}) on start.
 *
 * <p>Embedded mode: see {@link EmbeddedPostmaster} (data folder, orphaned postmasters, the watchdog
 * that restarts a dead server; the pools reconnect by themselves, and charges written meanwhile
 * wait in the ledger's outbox). With {@link DatabaseConfig#attachToRunningEmbedded()}, a server
 * another owner runs on the folder is used over TCP instead.
 *
 * <p>Pools: {@link #dataSource()} (API keys, usage queries, reconciliation), {@link
 * #ledgerDataSource()}, {@code ledgerConnections} (2) with short timeouts, for the ledger writers
 * and replayer, and {@link #maintenanceDataSource()} (the schema's owner; migrations and partition
 * maintenance).
 */
public final class Database implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(Database.class);

  private final DatabaseConfig config;
  private final EmbeddedPostmaster postmaster;
  private final HikariDataSource pool;
  private final HikariDataSource ledgerPool;
  private final HikariDataSource ownerPool;
  private final String jdbcUrl;
  private final boolean attached;
  private final AtomicBoolean closed = new AtomicBoolean();

  private Database(
      DatabaseConfig config,
      EmbeddedPostmaster postmaster,
      HikariDataSource pool,
      HikariDataSource ledgerPool,
      HikariDataSource ownerPool,
      String jdbcUrl,
      boolean attached) {
    this.config = config;
    this.attached = attached;
    this.postmaster = postmaster;
    this.pool = pool;
    this.ledgerPool = ledgerPool;
    this.ownerPool = ownerPool;
    this.jdbcUrl = jdbcUrl;
    if (postmaster != null) {
      postmaster.startWatchdog();
    }
  }

  /**
   * Connects to (or starts) the database and migrates it.
   *
   * <p>Roles: for an external database, every pool uses the configured user. For the embedded one
   * (started here or attached to), migrations and partition maintenance ({@link
   * #maintenanceDataSource()}) run as the owner, {@code postgres}, and everything else ({@link
   * #dataSource()}, {@link #ledgerDataSource()}) as {@code gpumeter_app}, which may read and write
   * rows but not change the schema; both passwords are read from (or, when new, written to) files
   * of mode 0600 in the data folder.
   *
   * @throws BillingException if the server cannot be started or reached, or a migration fails
   * @throws IllegalStateException if the JVM runs as root and {@code unshare} is not available, or
   *     the data folder is used by another running process
   */
  public static Database start(DatabaseConfig cfg) {
    EmbeddedPostmaster pg = null;
    HikariDataSource pool = null;
    HikariDataSource ledgerPool = null;
    HikariDataSource ownerPool = null;
    try {
      String url;
      String user;
      String password;
      OptionalInt running =
          cfg.isEmbedded() && cfg.attachToRunningEmbedded()
              ? EmbeddedPostmaster.runningPostmasterPort(cfg.dataDirectory())
              : OptionalInt.empty();
      if (running.isPresent()) {
        url = EmbeddedPostmaster.jdbcUrl(running.getAsInt());
        LOG.info(
            "The embedded PostgreSQL on {} is run by another process; connecting to it on port {}",
            cfg.dataDirectory(),
            running.getAsInt());
      } else if (cfg.isEmbedded()) {
        pg = EmbeddedPostmaster.start(cfg);
        url = pg.jdbcUrl();
      } else {
        url = cfg.jdbcUrl();
      }
      if (cfg.isEmbedded()) {
        Path dir = cfg.dataDirectory();
        ownerPool =
            ownerPool(
                url,
                EmbeddedCredentials.read(dir.resolve(EmbeddedCredentials.OWNER_PASSWORD_FILE)));
        user = EmbeddedCredentials.APP;
        Path appFile = dir.resolve(EmbeddedCredentials.APP_PASSWORD_FILE);
        // Attached: the running server made the role and its file; never replace its password.
        password =
            running.isPresent()
                ? EmbeddedCredentials.read(appFile)
                : EmbeddedCredentials.readOrCreate(appFile);
      } else {
        user = cfg.user();
        password = cfg.password();
      }
      if (ownerPool != null) {
        Flyway.configure()
            .dataSource(ownerPool)
            .locations("classpath:db/migration")
            .load()
            .migrate();
        if (running.isEmpty()) {
          AppRole.grant(ownerPool, password);
        }
        pool = pool(cfg, url, user, password);
      } else {
        pool = pool(cfg, url, user, password);
        Flyway.configure().dataSource(pool).locations("classpath:db/migration").load().migrate();
      }
      ledgerPool = ledgerPool(cfg, url, user, password);
      return new Database(cfg, pg, pool, ledgerPool, ownerPool, url, running.isPresent());
    } catch (IOException | SQLException | RuntimeException e) {
      if (ledgerPool != null) {
        ledgerPool.close();
      }
      if (pool != null) {
        pool.close();
      }
      if (ownerPool != null) {
        ownerPool.close();
      }
      if (pg != null) {
        pg.close();
      }
      if (e instanceof IllegalStateException || e instanceof BillingException) {
        throw (RuntimeException) e;
      }
      throw new BillingException("could not start the billing database (" + cfg + ")", e);
    }
  }

  /** The embedded server's owner: migrations and partition maintenance, 2 connections at most. */
  private static HikariDataSource ownerPool(String url, String password) {
    HikariConfig hc = baseConfig("gpumeter-owner", url, EmbeddedCredentials.OWNER, password);
    hc.setMaximumPoolSize(2);
    hc.setMinimumIdle(0);
    hc.addDataSourceProperty("ApplicationName", "gpumeter-owner");
    return new HikariDataSource(hc);
  }

  private static HikariDataSource pool(
      DatabaseConfig cfg, String url, String user, String password) {
    HikariConfig hc = baseConfig("gpumeter-billing", url, user, password);
    hc.setMaximumPoolSize(cfg.maximumPoolSize());
    hc.setMinimumIdle(Math.min(2, cfg.maximumPoolSize()));
    hc.setConnectionTimeout(cfg.connectionTimeout().toMillis());
    hc.addDataSourceProperty("ApplicationName", "gpumeter");
    return new HikariDataSource(hc);
  }

  /**
   * The ledger's own small pool: short timeouts so a dead database fails over to the outbox fast.
   */
  private static HikariDataSource ledgerPool(
      DatabaseConfig cfg, String url, String user, String password) {
    HikariConfig hc = baseConfig("gpumeter-ledger", url, user, password);
    hc.setMaximumPoolSize(cfg.ledgerConnections());
    hc.setMinimumIdle(1);
    hc.setConnectionTimeout(cfg.ledgerConnectionTimeout().toMillis());
    hc.setValidationTimeout(Math.min(cfg.ledgerConnectionTimeout().toMillis(), 1000));
    hc.addDataSourceProperty("ApplicationName", "gpumeter-ledger");
    hc.addDataSourceProperty(
        "socketTimeout", String.valueOf(cfg.ledgerSocketTimeout().getSeconds()));
    hc.addDataSourceProperty(
        "connectTimeout", String.valueOf(Math.max(1, cfg.ledgerConnectionTimeout().toSeconds())));
    return new HikariDataSource(hc);
  }

  private static HikariConfig baseConfig(String name, String url, String user, String password) {
    HikariConfig hc = new HikariConfig();
    hc.setPoolName(name);
    hc.setJdbcUrl(url);
    if (user != null) {
      hc.setUsername(user);
    }
    if (password != null) {
      hc.setPassword(password);
    }
    return hc;
  }

  /** The pooled data source; connections are in auto-commit mode. */
  public DataSource dataSource() {
    return pool;
  }

  /** The ledger's own pool (2 connections, short timeouts; see {@link DatabaseConfig}). */
  public DataSource ledgerDataSource() {
    return ledgerPool;
  }

  /**
   * Connections that may change the schema, for partition maintenance (creating and dropping
   * partitions needs the tables' owner): the embedded server's owner; for an external database, the
   * same pool as {@link #dataSource()}.
   */
  public DataSource maintenanceDataSource() {
    return ownerPool != null ? ownerPool : pool;
  }

  /**
   * Reads {@code fsync}, {@code full_page_writes} and {@code synchronous_commit} from the database
   * ({@code SHOW}); {@link DatabaseDurability#unsafeAllowed()} is false.
   *
   * @throws BillingException if the database cannot be asked
   */
  public DatabaseDurability readDurability() {
    try (Connection c = pool.getConnection();
        Statement st = c.createStatement()) {
      return new DatabaseDurability(
          show(st, "fsync"), show(st, "full_page_writes"), show(st, "synchronous_commit"), false);
    } catch (SQLException e) {
      throw new BillingException("could not read the billing database's durability settings", e);
    }
  }

  private static String show(Statement st, String setting) throws SQLException {
    try (ResultSet rs = st.executeQuery("SHOW " + setting)) {
      return rs.next() ? rs.getString(1) : null;
    }
  }

  public DatabaseConfig config() {
    return config;
  }

  /**
   * The embedded server's postmaster pid (first line of {@code postmaster.pid}), if the file is
   * there; for an external or attached database, empty.
   */
  public OptionalLong embeddedPostmasterPid() {
    return postmaster == null ? OptionalLong.empty() : postmaster.pid();
  }

  /** True for an external database; for the embedded one, whether its postmaster is alive. */
  public boolean isEmbeddedRunning() {
    return postmaster == null || postmaster.isRunning();
  }

  /**
   * Restarts the embedded server (same data folder, same port) if its postmaster is not running;
   * PostgreSQL's crash recovery brings back every committed transaction. Does nothing for an
   * external database or after {@link #close()}.
   *
   * @return true if the server was restarted
   * @throws BillingException if it could not be restarted in time
   */
  public boolean ensureEmbeddedRunning() {
    return postmaster != null && !closed.get() && postmaster.ensureRunning();
  }

  /**
   * Whether the database answers now: a connection from the main pool, validated within {@code
   * timeout} (at least a second). Blocks the caller up to the pool's connection timeout plus {@code
   * timeout}.
   *
   * @return null if it answered, else why not
   */
  public String checkReachable(Duration timeout) {
    int seconds = (int) Math.max(1, Math.min(Integer.MAX_VALUE, timeout.toSeconds()));
    try (Connection c = pool.getConnection()) {
      return c.isValid(seconds) ? null : "the billing database did not answer";
    } catch (SQLException | RuntimeException e) {
      return "the billing database is unreachable: " + e.getMessage();
    }
  }

  /** The JDBC URL the pool connects to. */
  public String jdbcUrl() {
    return jdbcUrl;
  }

  /** True when this object started (and will stop) the server. */
  public boolean isEmbedded() {
    return postmaster != null;
  }

  /**
   * True when the configuration asked for an embedded server but another owner was already running
   * one on the data folder, and this object connected to it over TCP instead ({@link
   * DatabaseConfig#attachToRunningEmbedded()}); {@link #close()} leaves that server running.
   */
  public boolean isAttached() {
    return attached;
  }

  /** Closes the pools, then stops the embedded server if there is one. Idempotent. */
  @Override
  public void close() {
    if (!closed.compareAndSet(false, true)) {
      return;
    }
    if (postmaster != null) {
      postmaster.stopWatchdog();
    }
    ledgerPool.close();
    pool.close();
    if (ownerPool != null) {
      ownerPool.close();
    }
    if (postmaster != null) {
      postmaster.close();
    }
  }
}
