package io.gpumeter.billing;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Objects;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Where the billing database lives and how it is reached. Immutable; build with {@link #builder()},
 * {@link #embedded(Path)}, or {@link #external(String, String, String)}.
 *
 * <p>With a JDBC URL the database is external and nothing is started. Without one, {@link
 * io.gpumeter.billing.db.Database#start} runs an embedded PostgreSQL whose data lives in {@link
 * #dataDirectory()} and survives restarts.
 */
public final class DatabaseConfig {

  public static final Path DEFAULT_DATA_DIRECTORY = Path.of("data", "postgres");

  private final String jdbcUrl;
  private final String user;
  private final String password;
  private final Path dataDirectory;
  private final Path binaryCacheDirectory;
  private final int port;
  private final int maximumPoolSize;
  private final Duration connectionTimeout;
  private final Duration startupTimeout;
  private final Duration ledgerConnectionTimeout;
  private final int ledgerConnections;
  private final Duration ledgerSocketTimeout;
  private final Duration embeddedWatchdogInterval;
  private final boolean attachToRunningEmbedded;
  private final boolean allowUnsafeDatabase;
  private final String embeddedListenAddress;
  private final String embeddedClientNetwork;

  private DatabaseConfig(Builder b) {
    this.jdbcUrl = b.jdbcUrl;
    this.user = b.user;
    this.password = b.password;
    this.dataDirectory = b.dataDirectory.toAbsolutePath().normalize();
    Path cache = b.binaryCacheDirectory;
    if (cache == null) {
      Path parent = dataDirectory.getParent();
      cache = parent != null ? parent : dataDirectory;
    }
    this.binaryCacheDirectory = cache.toAbsolutePath().normalize();
    this.port = b.port;
    this.maximumPoolSize = b.maximumPoolSize;
    this.connectionTimeout = b.connectionTimeout;
    this.startupTimeout = b.startupTimeout;
    this.ledgerConnectionTimeout = b.ledgerConnectionTimeout;
    this.ledgerConnections = b.ledgerConnections;
    this.ledgerSocketTimeout = b.ledgerSocketTimeout;
    this.embeddedWatchdogInterval = b.embeddedWatchdogInterval;
    this.attachToRunningEmbedded = b.attachToRunningEmbedded;
    this.allowUnsafeDatabase = b.allowUnsafeDatabase;
    this.embeddedListenAddress = b.embeddedListenAddress;
    this.embeddedClientNetwork = b.embeddedClientNetwork;
  }

  public static Builder builder() {
    return new Builder();
  }

  /** An embedded PostgreSQL with its data in {@code dataDirectory}. */
  public static DatabaseConfig embedded(Path dataDirectory) {
    return builder().dataDirectory(dataDirectory).build();
  }

  /** An external PostgreSQL; {@code user} and {@code password} may be null (taken from the URL). */
  public static DatabaseConfig external(String jdbcUrl, String user, String password) {
    return builder().jdbcUrl(jdbcUrl).user(user).password(password).build();
  }

  /** True when no JDBC URL is configured and an embedded server is to be started. */
  public boolean isEmbedded() {
    return jdbcUrl == null;
  }

  /** The external JDBC URL, or null for the embedded server. */
  public String jdbcUrl() {
    return jdbcUrl;
  }

  public String user() {
    return user;
  }

  public String password() {
    return password;
  }

  /** Data folder of the embedded server (absolute). */
  public Path dataDirectory() {
    return dataDirectory;
  }

  /**
   * Where the root-safe repack of the PostgreSQL binaries is cached (absolute). Defaults to the
   * parent of {@link #dataDirectory()}.
   */
  public Path binaryCacheDirectory() {
    return binaryCacheDirectory;
  }

  /** Port of the embedded server; 0 picks a free one. */
  public int port() {
    return port;
  }

  public int maximumPoolSize() {
    return maximumPoolSize;
  }

  public Duration connectionTimeout() {
    return connectionTimeout;
  }

  /** How long to wait for the embedded server to accept connections. */
  public Duration startupTimeout() {
    return startupTimeout;
  }

  /**
   * How long a ledger write waits for a connection before it counts as failed (and its batch goes
   * to the outbox). The ledger has its own small pool ({@link #ledgerConnections()}: the writers
   * and the replayer) so that it neither waits behind API-key or usage queries nor stalls for the
   * main pool's {@link #connectionTimeout()} when the database is down.
   */
  public Duration ledgerConnectionTimeout() {
    return ledgerConnectionTimeout;
  }

  /**
   * Size of the ledger's own pool: one connection per ledger writer thread ({@code
   * LedgerConfig.writers()}) and one for the outbox replayer; 2 by default (one writer).
   */
  public int ledgerConnections() {
    return ledgerConnections;
  }

  /**
   * Read timeout of the ledger's connections ({@code socketTimeout}): a write stuck on a dead
   * network fails after this and its batch goes to the outbox.
   */
  public Duration ledgerSocketTimeout() {
    return ledgerSocketTimeout;
  }

  /**
   * How often {@link io.gpumeter.billing.db.Database} checks that the embedded server's postmaster
   * is alive and restarts it if it died (killed, OOM); zero disables the check. Ignored for an
   * external database.
   */
  public Duration embeddedWatchdogInterval() {
    return embeddedWatchdogInterval;
  }

  /**
   * For tools that run beside a server (create-key, reconcile): when the embedded data folder is in
   * use by a running server (zonky's lock on the folder is held and {@code postmaster.pid} names a
   * live postmaster), connect to that postmaster over TCP on the port named in the file (its fourth
   * line) instead of failing with "in use"; {@link io.gpumeter.billing.db.Database#close()} then
   * leaves it running. Off by default: a second server on the same folder is refused. Ignored for
   * an external database.
   */
  public boolean attachToRunningEmbedded() {
    return attachToRunningEmbedded;
  }

  /**
   * Whether billing may start in {@link Durability#DURABLE durable} mode on a database whose {@link
   * DatabaseDurability} is not safe ({@code fsync}, {@code full_page_writes} or {@code
   * synchronous_commit} off): then charges acknowledged as durable can be lost by an OS crash or a
   * power loss. Off by default: {@link Billing#start} refuses such a database.
   */
  public boolean allowUnsafeDatabase() {
    return allowUnsafeDatabase;
  }

  /**
   * One more IPv4 address, besides 127.0.0.1, that the embedded server listens on; null (the
   * default) for loopback only. Set together with {@link #embeddedClientNetwork()} by {@link
   * Builder#embeddedRemoteAccess}: for a test or benchmark whose server processes run in other
   * network namespaces (hosts) than the database. Ignored for an external database.
   */
  public String embeddedListenAddress() {
    return embeddedListenAddress;
  }

  /**
   * The IPv4 network (CIDR) from which connections to {@link #embeddedListenAddress()} are
   * accepted, with a password (scram-sha-256) like every connection; null when the server listens
   * on loopback only.
   */
  public String embeddedClientNetwork() {
    return embeddedClientNetwork;
  }

  @Override
  public String toString() {
    return isEmbedded()
        ? "DatabaseConfig{embedded, dataDirectory=" + dataDirectory + ", port=" + port + "}"
        : "DatabaseConfig{jdbcUrl=" + jdbcUrl + ", user=" + user + ", password=***}";
  }

  /** Validates each value as it is set, naming the bad value. */
  public static final class Builder {
    private String jdbcUrl;
    private String user;
    private String password;
    private Path dataDirectory = DEFAULT_DATA_DIRECTORY;
    private Path binaryCacheDirectory;
    private int port;
    private int maximumPoolSize = 10;
    private Duration connectionTimeout = Duration.ofSeconds(5);
    private Duration startupTimeout = Duration.ofSeconds(30);
    private Duration ledgerConnectionTimeout = Duration.ofSeconds(1);
    private int ledgerConnections = 2;
    private Duration ledgerSocketTimeout = Duration.ofSeconds(30);
    private Duration embeddedWatchdogInterval = Duration.ofSeconds(5);
    private boolean attachToRunningEmbedded;
    private boolean allowUnsafeDatabase;
    private String embeddedListenAddress;
    private String embeddedClientNetwork;

    private Builder() {}

    public Builder jdbcUrl(String jdbcUrl) {
      if (jdbcUrl != null && !jdbcUrl.startsWith("jdbc:postgresql:")) {
        throw new IllegalArgumentException(
            "jdbcUrl must start with jdbc:postgresql:, was '" + jdbcUrl + "'");
      }
      this.jdbcUrl = jdbcUrl;
      return this;
    }

    public Builder user(String user) {
      this.user = user;
      return this;
    }

    public Builder password(String password) {
      this.password = password;
      return this;
    }

    public Builder dataDirectory(Path dataDirectory) {
      this.dataDirectory = Objects.requireNonNull(dataDirectory, "dataDirectory");
      return this;
    }

    public Builder binaryCacheDirectory(Path binaryCacheDirectory) {
      this.binaryCacheDirectory = binaryCacheDirectory;
      return this;
    }

    public Builder port(int port) {
      if (port < 0 || port > 65535) {
        throw new IllegalArgumentException("port must be in [0, 65535], was " + port);
      }
      this.port = port;
      return this;
    }

    public Builder maximumPoolSize(int maximumPoolSize) {
      if (maximumPoolSize < 1) {
        throw new IllegalArgumentException("maximumPoolSize must be >= 1, was " + maximumPoolSize);
      }
      this.maximumPoolSize = maximumPoolSize;
      return this;
    }

    public Builder connectionTimeout(Duration connectionTimeout) {
      // HikariCP's floor is 250 ms.
      if (connectionTimeout.toMillis() < 250) {
        throw new IllegalArgumentException(
            "connectionTimeout must be >= 250ms, was " + connectionTimeout);
      }
      this.connectionTimeout = connectionTimeout;
      return this;
    }

    public Builder startupTimeout(Duration startupTimeout) {
      if (startupTimeout.isNegative() || startupTimeout.isZero()) {
        throw new IllegalArgumentException(
            "startupTimeout must be positive, was " + startupTimeout);
      }
      this.startupTimeout = startupTimeout;
      return this;
    }

    /** 2 to 17: the ledger's writers + 1 for the replayer. */
    public Builder ledgerConnections(int n) {
      if (n < 2 || n > 17) {
        throw new IllegalArgumentException("ledgerConnections must be in [2, 17], was " + n);
      }
      this.ledgerConnections = n;
      return this;
    }

    public Builder ledgerConnectionTimeout(Duration timeout) {
      if (timeout == null || timeout.toMillis() < 250) {
        throw new IllegalArgumentException(
            "ledgerConnectionTimeout must be >= 250ms, was " + timeout);
      }
      this.ledgerConnectionTimeout = timeout;
      return this;
    }

    /** Whole seconds (the driver's unit), at least 1 s. */
    public Builder ledgerSocketTimeout(Duration timeout) {
      if (timeout == null || timeout.getSeconds() < 1) {
        throw new IllegalArgumentException("ledgerSocketTimeout must be >= 1s, was " + timeout);
      }
      this.ledgerSocketTimeout = timeout;
      return this;
    }

    /** Zero disables the watchdog. */
    public Builder embeddedWatchdogInterval(Duration interval) {
      if (interval == null || interval.isNegative()) {
        throw new IllegalArgumentException(
            "embeddedWatchdogInterval must be >= 0, was " + interval);
      }
      this.embeddedWatchdogInterval = interval;
      return this;
    }

    /** See {@link DatabaseConfig#attachToRunningEmbedded()}. */
    public Builder attachToRunningEmbedded(boolean attach) {
      this.attachToRunningEmbedded = attach;
      return this;
    }

    /** See {@link DatabaseConfig#allowUnsafeDatabase()}. */
    public Builder allowUnsafeDatabase(boolean allow) {
      this.allowUnsafeDatabase = allow;
      return this;
    }

    /**
     * Lets the embedded server listen on {@code listenAddress} too (an IPv4 address literal of this
     * host, not 0.0.0.0) and accept password connections from {@code clientNetwork} (IPv4 CIDR,
     * prefix 8 to 32); both null to undo. See {@link DatabaseConfig#embeddedListenAddress()}.
     */
    public Builder embeddedRemoteAccess(String listenAddress, String clientNetwork) {
      if (listenAddress == null && clientNetwork == null) {
        this.embeddedListenAddress = null;
        this.embeddedClientNetwork = null;
        return this;
      }
      if (listenAddress == null
          || !isIpv4(listenAddress)
          || listenAddress.equals("0.0.0.0")
          || listenAddress.equals("255.255.255.255")) {
        throw new IllegalArgumentException(
            "listenAddress must be one IPv4 address of this host, was '" + listenAddress + "'");
      }
      Matcher m = clientNetwork == null ? null : CIDR.matcher(clientNetwork);
      if (m == null
          || !m.matches()
          || !isIpv4(m.group(1))
          || Integer.parseInt(m.group(2)) < 8
          || Integer.parseInt(m.group(2)) > 32) {
        throw new IllegalArgumentException(
            "clientNetwork must be an IPv4 network a.b.c.d/n with n in [8, 32], was '"
                + clientNetwork
                + "'");
      }
      this.embeddedListenAddress = listenAddress;
      this.embeddedClientNetwork = clientNetwork;
      return this;
    }

    private static final Pattern IPV4 =
        Pattern.compile("(\\d{1,3})\\.(\\d{1,3})\\.(\\d{1,3})\\.(\\d{1,3})");
    private static final Pattern CIDR = Pattern.compile("([0-9.]{7,15})/(\\d{1,2})");

    private static boolean isIpv4(String s) {
      Matcher m = IPV4.matcher(s);
      if (!m.matches()) {
        return false;
      }
      for (int i = 1; i <= 4; i++) {
        if (Integer.parseInt(m.group(i)) > 255) {
          return false;
        }
      }
      return true;
    }

    public DatabaseConfig build() {
      return new DatabaseConfig(this);
    }
  }
}
