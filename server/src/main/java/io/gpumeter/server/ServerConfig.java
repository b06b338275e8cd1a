package io.gpumeter.server;

import io.gpumeter.batching.SchedulerConfig;
import io.gpumeter.billing.ApiKeyCacheConfig;
import io.gpumeter.billing.BillingConfig;
import io.gpumeter.billing.CommitPoint;
import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.Durability;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.RetentionConfig;
import io.gpumeter.metering.WeightPolicy;
import io.gpumeter.server.config.ConfigLoader;
import io.gpumeter.server.config.ConfigSource;
import io.gpumeter.server.config.ConfigValues;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * The server's settings: immutable, validated once, sealed before the server starts; and the config
 * objects of the other modules built from them ({@link #schedulerConfig()}, {@link
 * #databaseConfig()}, {@link #billingConfig()}), so no module reads the environment itself.
 *
 * <p>{@link #KEYS} lists every key with its default, and server/README.md documents each. The
 * values are read by {@link ConfigLoader} (defaults, then the {@code --config} properties file,
 * then {@code GPUMETER_*} environment variables, then {@code gpumeter.*} system properties) and
 * parsed by {@link ConfigValues}' rules; a bad value is refused with a message that names the key,
 * the value and where it came from. This class adds the checks that span keys.
 */
public final class ServerConfig {

  /** Recognised keys and their defaults, in documentation order. */
  public static final Map<String, String> KEYS;

  static {
    Map<String, String> k = new LinkedHashMap<>();
    k.put("host", "0.0.0.0");
    k.put("port", "8080");
    k.put("models.dir", "./models");
    k.put("device", "auto");
    k.put("devices", "");
    k.put("timer", "auto");
    k.put("data.dir", "./data");
    k.put("db.url", "");
    k.put("db.user", "");
    k.put("db.password", "");
    k.put("db.password_file", "");
    k.put("db.port", "0");
    k.put("db.binary_cache_dir", "");
    k.put("ledger.durability", "durable");
    k.put("ledger.allow_unsafe_database", "false");
    k.put("ledger.writers", "1");
    k.put("ledger.commit_point", "postgres");
    k.put("ledger.commit_log_max_bytes", "1g");
    k.put("outbox.dir", "");
    k.put("outbox.max_bytes", "1g");
    k.put("retention.days", "90");
    k.put("admin.token", "");
    k.put("auth.key_cache_ttl", "10s");
    k.put("auth.max_failures", "20");
    k.put("auth.failure_window", "60s");
    k.put("console.session_ttl", "8h");
    k.put("billing.balance_cache_ttl", "5s");
    k.put("pricing.min_lead", "30s");
    k.put("metrics.spend_accounts", "");
    k.put("metrics.spend_top_accounts", "10");
    k.put("http.max_body_bytes", "1048576");
    k.put("http.io_threads", "0");
    k.put("http.blocking_threads", "4");
    k.put("http.max_connections", "10000");
    k.put("http.max_connections_per_address", "1000");
    k.put("http.idle_timeout", "120s");
    k.put("scheduler.max_running", "32");
    k.put("scheduler.token_budget", "256");
    k.put("scheduler.prefill_chunk", "128");
    k.put("scheduler.queue_capacity", "1024");
    k.put("scheduler.max_queued_per_key", "");
    k.put("scheduler.request_timeout", "300s");
    k.put("scheduler.batch_window", "0ms");
    k.put("completions.max_tokens_default", "16");
    k.put("completions.max_tokens_cap", "1024");
    k.put("completions.stream_buffer_bytes", "1m");
    k.put("http.socket_send_buffer", "0");
    k.put("shutdown.grace", "30s");
    KEYS = Collections.unmodifiableMap(k);
  }

  /** Shortest accepted {@code admin.token}. */
  static final int MIN_ADMIN_TOKEN_LENGTH = 16;

  private static final Duration NEGATIVE_KEY_TTL = Duration.ofSeconds(5);

  private static final Pattern DEVICE = Pattern.compile("auto|cpu|cuda:(0|[1-9][0-9]{0,2})");

  private final String host;
  private final int port;
  private final Path modelsDir;
  private final String device;

  /** Replica devices per model name ({@code *}: every other model); empty: {@code device}. */
  private final Map<String, List<String>> devices;

  private final String timer;
  private final Path dataDir;
  private final String dbUrl;
  private final String dbUser;
  private final String dbPassword;
  private final int dbPort;
  private final Path dbBinaryCacheDir;
  private final Durability durability;
  private final boolean allowUnsafeDatabase;
  private final int ledgerWriters;
  private final CommitPoint commitPoint;
  private final long commitLogMaxBytes;
  private final Path outboxDir;
  private final long outboxMaxBytes;
  private final RetentionConfig retention;
  private final String adminToken;
  private final Duration keyCacheTtl;
  private final int authMaxFailures;
  private final Duration authFailureWindow;
  private final Duration consoleSessionTtl;
  private final Duration balanceCacheTtl;
  private final Duration priceMinLead;
  private final Set<String> spendAccounts;
  private final int spendTopAccounts;
  private final int maxBodyBytes;
  private final int ioThreads;
  private final int blockingThreads;
  private final int maxConnections;
  private final int maxConnectionsPerAddress;
  private final Duration idleTimeout;
  private final int maxRunning;
  private final int tokenBudget;
  private final int prefillChunk;
  private final int queueCapacity;
  private final int maxQueuedPerKey;
  private final Duration requestTimeout;
  private final Duration batchWindow;
  private final int maxTokensDefault;
  private final int maxTokensCap;
  private final long streamBufferBytes;
  private final long socketSendBuffer;
  private final Duration shutdownGrace;

  private ServerConfig(ConfigValues v) {
    host = v.text("host");
    port = v.intIn("port", 0, 65535);
    modelsDir = v.parse("models.dir", Path::of);
    device = v.text("device");
    devices = parseDevices(v, v.optional("devices"));
    timer = v.text("timer");
    dataDir = v.parse("data.dir", Path::of);
    dbUrl = v.optional("db.url");
    dbUser = v.optional("db.user");
    dbPassword = password(v);
    dbPort = v.intIn("db.port", 0, 65535);
    dbBinaryCacheDir =
        v.optional("db.binary_cache_dir") == null
            ? dataDir
            : v.parse("db.binary_cache_dir", Path::of);
    durability =
        v.parse(
            "ledger.durability",
            s -> {
              switch (s.toLowerCase(Locale.ROOT)) {
                case "durable":
                  return Durability.DURABLE;
                case "fast":
                  return Durability.FAST;
                default:
                  throw new IllegalArgumentException("must be durable or fast");
              }
            });
    allowUnsafeDatabase = v.bool("ledger.allow_unsafe_database");
    ledgerWriters = v.intIn("ledger.writers", 1, 8);
    commitPoint =
        v.parse(
            "ledger.commit_point",
            s -> {
              switch (s.toLowerCase(Locale.ROOT)) {
                case "postgres":
                  return CommitPoint.POSTGRES;
                case "local":
                  return CommitPoint.LOCAL;
                default:
                  throw new IllegalArgumentException("must be postgres or local");
              }
            });
    // at least four segments of 4 KiB: the one in use, the next (prepared ahead) and two more
    commitLogMaxBytes = v.bytes("ledger.commit_log_max_bytes", 16L << 10);
    outboxDir =
        v.optional("outbox.dir") == null
            ? dataDir.resolve("outbox")
            : v.parse("outbox.dir", Path::of);
    outboxMaxBytes = v.bytes("outbox.max_bytes", 4096);
    long days = v.longIn("retention.days", 1, 365L * 100);
    try {
      retention = RetentionConfig.ofDays(days);
    } catch (IllegalArgumentException e) {
      throw v.invalid("retention.days", e.getMessage());
    }
    adminToken = v.optional("admin.token");
    if (adminToken != null && adminToken.length() < MIN_ADMIN_TOKEN_LENGTH) {
      // the value is a secret: never echo it
      throw v.invalidSecret(
          "admin.token",
          "must be at least "
              + MIN_ADMIN_TOKEN_LENGTH
              + " characters (was "
              + adminToken.length()
              + ")");
    }
    keyCacheTtl = v.duration("auth.key_cache_ttl", Duration.ZERO);
    authMaxFailures = v.intIn("auth.max_failures", 1, 1_000_000);
    authFailureWindow = v.duration("auth.failure_window", Duration.ofSeconds(1));
    consoleSessionTtl = v.duration("console.session_ttl", Duration.ofSeconds(1));
    balanceCacheTtl = v.duration("billing.balance_cache_ttl", Duration.ofMillis(100));
    priceMinLead = v.duration("pricing.min_lead", Duration.ZERO);
    spendAccounts = v.parse("metrics.spend_accounts", ServerConfig::accountNames);
    spendTopAccounts = v.intIn("metrics.spend_top_accounts", 0, 1_000);
    maxBodyBytes = v.intIn("http.max_body_bytes", 1024, 256 * 1024 * 1024);
    ioThreads = v.intIn("http.io_threads", 0, 1024);
    blockingThreads = v.intIn("http.blocking_threads", 1, 256);
    maxConnections = v.intIn("http.max_connections", 1, 1 << 24);
    maxConnectionsPerAddress = v.intIn("http.max_connections_per_address", 1, 1 << 24);
    idleTimeout = v.duration("http.idle_timeout", Duration.ofMillis(1));
    maxRunning = v.intIn("scheduler.max_running", 1, 4096);
    tokenBudget = v.intIn("scheduler.token_budget", 1, 1 << 20);
    prefillChunk = v.intIn("scheduler.prefill_chunk", 1, 1 << 20);
    queueCapacity = v.intIn("scheduler.queue_capacity", 1, 1 << 24);
    maxQueuedPerKey =
        v.optional("scheduler.max_queued_per_key") == null
            ? SchedulerConfig.defaultMaxQueuedPerKey(queueCapacity)
            : v.intIn("scheduler.max_queued_per_key", 1, 1 << 24);
    requestTimeout = v.duration("scheduler.request_timeout", Duration.ofMillis(1));
    batchWindow = v.duration("scheduler.batch_window", Duration.ZERO);
    maxTokensDefault = v.intIn("completions.max_tokens_default", 1, 1 << 20);
    maxTokensCap = v.intIn("completions.max_tokens_cap", 1, 1 << 20);
    streamBufferBytes = v.bytes("completions.stream_buffer_bytes", 1);
    socketSendBuffer = v.bytes("http.socket_send_buffer", 0);
    if (socketSendBuffer > Integer.MAX_VALUE) {
      throw v.invalid("http.socket_send_buffer", "must be below 2 GiB");
    }
    shutdownGrace = v.duration("shutdown.grace", Duration.ZERO);

    if (!DEVICE.matcher(device).matches()) {
      throw v.invalid("device", "must be auto, cpu or cuda:N");
    }
    if (!timer.equals("auto") && !timer.equals("host")) {
      throw v.invalid("timer", "must be auto or host");
    }
    if (tokenBudget < maxRunning) {
      throw v.invalid(
          "scheduler.token_budget",
          "must be >= scheduler.max_running ("
              + maxRunning
              + ") so every running sequence can"
              + " decode in one step");
    }
    if (maxQueuedPerKey > queueCapacity) {
      throw v.invalid(
          "scheduler.max_queued_per_key",
          "must be <= scheduler.queue_capacity (" + queueCapacity + ")");
    }
    if (maxTokensDefault > maxTokensCap) {
      throw v.invalid(
          "completions.max_tokens_default",
          "must be <= completions.max_tokens_cap (" + maxTokensCap + ")");
    }
    if (dbUrl != null && !dbUrl.startsWith("jdbc:postgresql:")) {
      throw v.invalid("db.url", "must start with jdbc:postgresql:");
    }
  }

  /**
   * Validates settings read by {@link ConfigLoader} (with {@link #KEYS} as its defaults).
   *
   * @throws IllegalArgumentException naming the first bad key, its value and its source
   */
  public static ServerConfig from(ConfigValues values) {
    return new ServerConfig(values);
  }

  /** The built-in defaults. */
  public static ServerConfig defaults() {
    return builder().build();
  }

  /** Starts from the defaults; {@link Builder#set} takes keys as in {@link #KEYS}. */
  public static Builder builder() {
    return new Builder();
  }

  /**
   * Reads the process's configuration through {@link ConfigLoader}: defaults, then {@code file} if
   * not null, then {@code System.getenv()}, then {@code System.getProperties()}.
   *
   * @throws IllegalArgumentException naming the key, value and source of a bad or unknown setting
   * @throws IOException if the file cannot be read
   */
  public static ServerConfig load(Path file) throws IOException {
    return load(file, System.getenv(), System.getProperties());
  }

  /** {@link #load(Path)} with explicit environment and system properties (for tests). */
  public static ServerConfig load(Path file, Map<String, String> env, Properties system)
      throws IOException {
    refuseSecretsOnTheCommandLine(system);
    return from(ConfigLoader.load(KEYS, file, env, system));
  }

  /**
   * The external database's password: {@code db.password} (file or environment), or the contents of
   * {@code db.password_file} (trailing line break removed); not both.
   */
  private static String password(ConfigValues v) {
    String inline = v.optional("db.password");
    String file = v.optional("db.password_file");
    if (file == null) {
      return inline;
    }
    if (inline != null) {
      throw v.invalid("db.password_file", "set db.password or db.password_file, not both");
    }
    try {
      String text = Files.readString(Path.of(file), StandardCharsets.UTF_8);
      return text.endsWith("\r\n")
          ? text.substring(0, text.length() - 2)
          : text.endsWith("\n") ? text.substring(0, text.length() - 1) : text;
    } catch (IOException | RuntimeException e) {
      throw v.invalid("db.password_file", "cannot be read: " + e);
    }
  }

  /**
   * Refuses {@code -Dgpumeter.db.password=...}: a command line is visible to every local user (ps,
   * /proc), so the password must come from the environment, the properties file, or a file named by
   * {@code db.password_file}.
   */
  static void refuseSecretsOnTheCommandLine(Properties system) {
    String name = ConfigLoader.propertyName("db.password");
    String value = system.getProperty(name);
    if (value != null && !value.isBlank()) {
      throw new IllegalArgumentException(
          "-D"
              + name
              + " is refused: a command line can be read by every local user. Give the database"
              + " password in the environment ("
              + ConfigLoader.envName("db.password")
              + "), or in a file of mode 0600 named by db.password_file ("
              + ConfigLoader.envName("db.password_file")
              + ")");
    }
  }

  /** The scheduler settings every model's scheduler runs with. */
  public SchedulerConfig schedulerConfig() {
    return new SchedulerConfig(
        maxRunning,
        tokenBudget,
        prefillChunk,
        queueCapacity,
        batchWindow.toNanos(),
        requestTimeout.toNanos(),
        WeightPolicy.tokens(),
        maxQueuedPerKey);
  }

  /**
   * The billing database: external when {@code db.url} is set, else an embedded PostgreSQL with its
   * data in {@code data.dir/postgres} and its (root-safe) binaries cached in {@code
   * db.binary_cache_dir}, by default {@code data.dir}.
   */
  public DatabaseConfig databaseConfig() {
    return databaseBuilder().build();
  }

  /**
   * {@link #databaseConfig()} for the command-line tools ({@code create-key}, {@code reconcile}):
   * if a server is running on the embedded data folder, they connect to its PostgreSQL over TCP
   * instead of starting one ({@link DatabaseConfig#attachToRunningEmbedded()}).
   */
  public DatabaseConfig toolDatabaseConfig() {
    return databaseBuilder().attachToRunningEmbedded(true).build();
  }

  private DatabaseConfig.Builder databaseBuilder() {
    DatabaseConfig.Builder b =
        DatabaseConfig.builder()
            .dataDirectory(dataDir.resolve("postgres"))
            .binaryCacheDirectory(dbBinaryCacheDir)
            .ledgerConnections(ledgerWriters + 1)
            .allowUnsafeDatabase(allowUnsafeDatabase);
    if (dbUrl != null) {
      b.jdbcUrl(dbUrl).user(dbUser).password(dbPassword);
    } else {
      b.port(dbPort);
    }
    return b;
  }

  /**
   * The ledger's settings: {@code ledger.durability}, {@code ledger.writers}, the outbox ({@code
   * outbox.dir}, by default {@code data.dir/outbox}; {@code outbox.max_bytes}), raw-record
   * retention ({@code retention.days}, partition maintenance at start and then hourly), and the
   * API-key cache ({@code auth.key_cache_ttl}; see {@link #apiKeyCacheConfig()}).
   */
  public BillingConfig billingConfig() {
    return BillingConfig.defaults()
        .withLedger(
            LedgerConfig.custom()
                .durability(durability)
                .writers(ledgerWriters)
                .commitPoint(commitPoint)
                .commitLogMaxBytes(commitLogMaxBytes)
                .commitLogSegmentBytes(commitLogSegmentBytes(commitLogMaxBytes))
                .outboxDirectory(outboxDir)
                .outboxMaxBytes(outboxMaxBytes)
                .build())
        .withRetention(retention)
        .withApiKeyCache(apiKeyCacheConfig());
  }

  /**
   * The server's API-key cache: valid keys for {@code auth.key_cache_ttl} (so a key revoked by
   * another process, such as {@code key revoke}, is accepted here for at most that long), unknown
   * keys for 5 s or that TTL if shorter.
   */
  public ApiKeyCacheConfig apiKeyCacheConfig() {
    Duration negative =
        keyCacheTtl.compareTo(NEGATIVE_KEY_TTL) < 0 ? keyCacheTtl : NEGATIVE_KEY_TTL;
    return new ApiKeyCacheConfig(ApiKeyCacheConfig.defaults().maximumSize(), keyCacheTtl, negative);
  }

  /** How long a valid API key is trusted without asking the database. */
  public Duration keyCacheTtl() {
    return keyCacheTtl;
  }

  /**
   * How old a cached balance (receipts' {@code x-ratelimit-*} headers, the remaining-funds gauges)
   * may be before it is reloaded in the background ({@code billing.balance_cache_ttl}).
   */
  public Duration balanceCacheTtl() {
    return balanceCacheTtl;
  }

  /**
   * How far ahead of now a new price version must start ({@code pricing.min_lead}; zero: no lead),
   * so that every replica's receipt price cache knows it before it applies.
   */
  public Duration priceMinLead() {
    return priceMinLead;
  }

  /** Accounts that always have their own spend series ({@code metrics.spend_accounts}). */
  public Set<String> spendAccounts() {
    return spendAccounts;
  }

  /** How many more accounts get their own spend series ({@code metrics.spend_top_accounts}). */
  public int spendTopAccounts() {
    return spendTopAccounts;
  }

  /** Comma-separated account names, each 1-200 characters of no whitespace; blank for none. */
  static Set<String> accountNames(String text) {
    Set<String> out = new LinkedHashSet<>();
    for (String part : text.split(",", -1)) {
      String n = part.strip();
      if (n.isEmpty()) {
        continue;
      }
      if (n.length() > 200 || n.chars().anyMatch(Character::isWhitespace)) {
        throw new IllegalArgumentException(
            "account names are 1-200 characters without spaces, comma-separated; got '" + n + "'");
      }
      out.add(n);
    }
    return Set.copyOf(out);
  }

  /** Failed authentications from one address within {@link #authFailureWindow()} before 429. */
  public int authMaxFailures() {
    return authMaxFailures;
  }

  public Duration authFailureWindow() {
    return authFailureWindow;
  }

  /** How long a web console sign-in lasts (from the sign-in; {@link ConsoleSessions}). */
  public Duration consoleSessionTtl() {
    return consoleSessionTtl;
  }

  /** When a completion's response may leave: once its charge is durable, or once queued. */
  public Durability durability() {
    return durability;
  }

  /**
   * {@code ledger.allow_unsafe_database}: start in durable mode even if the database has {@code
   * fsync}, {@code full_page_writes} or {@code synchronous_commit} off (logged as a warning and
   * shown on {@code /readyz}).
   */
  public boolean allowUnsafeDatabase() {
    return allowUnsafeDatabase;
  }

  /** {@code ledger.commit_point}: where a durable charge is durable when answered. */
  public CommitPoint commitPoint() {
    return commitPoint;
  }

  /** A quarter of the commit log's bound, from 4 KiB to 8 MiB. */
  static long commitLogSegmentBytes(long maxBytes) {
    return Math.max(4096, Math.min(8L << 20, maxBytes / 4));
  }

  /** {@code ledger.commit_log_max_bytes}: the local commit log's bound while PostgreSQL is down. */
  public long commitLogMaxBytes() {
    return commitLogMaxBytes;
  }

  /** {@code ledger.writers}: the ledger's writer threads, each committing on its own connection. */
  public int ledgerWriters() {
    return ledgerWriters;
  }

  /** The ledger's local outbox folder. */
  public Path outboxDir() {
    return outboxDir;
  }

  public long outboxMaxBytes() {
    return outboxMaxBytes;
  }

  /** Raw usage records are kept at least this long (90 days at least). */
  public RetentionConfig retention() {
    return retention;
  }

  /** The admin API's bearer token, or null when the admin API is disabled. Never logged. */
  String adminToken() {
    return adminToken;
  }

  public String host() {
    return host;
  }

  /** HTTP port; 0 binds an ephemeral port (see {@link GpumeterServer#port()}). */
  public int port() {
    return port;
  }

  public Path modelsDir() {
    return modelsDir;
  }

  /** {@code auto}, {@code cpu} or {@code cuda:N}. */
  public String device() {
    return device;
  }

  /**
   * The devices of a model's replicas: its own {@code devices} entry, else the {@code devices}
   * entry for every model, else {@link #device()} alone (one replica). Each is {@code auto}, {@code
   * cpu}, {@code cuda:N} or {@code all}.
   */
  public List<String> devicesFor(String model) {
    List<String> own = devices.get(model);
    if (own != null) {
      return own;
    }
    return devices.getOrDefault("*", List.of(device));
  }

  private static final Pattern DEVICES_ENTRY =
      Pattern.compile("auto|all|cpu|cuda:(0|[1-9][0-9]{0,2})");

  /**
   * {@code devices}: entries separated by {@code ;}, each a comma-separated list of devices for
   * every model or {@code <model>=<list>} for one model; at most one list per model and one for
   * all.
   */
  private static Map<String, List<String>> parseDevices(ConfigValues v, String value) {
    Map<String, List<String>> out = new LinkedHashMap<>();
    if (value == null) {
      return Map.of();
    }
    for (String entry : value.split(";", -1)) {
      String e = entry.trim();
      if (e.isEmpty()) {
        throw v.invalid("devices", "has an empty entry (entries are separated by ';')");
      }
      String model = "*";
      int eq = e.indexOf('=');
      if (eq >= 0) {
        model = e.substring(0, eq).trim();
        e = e.substring(eq + 1).trim();
        if (model.isEmpty() || model.equals("*")) {
          throw v.invalid("devices", "names no model before '=' in '" + entry.trim() + "'");
        }
      }
      List<String> list = new ArrayList<>();
      for (String d : e.split(",", -1)) {
        String dev = d.trim().toLowerCase(Locale.ROOT);
        if (!DEVICES_ENTRY.matcher(dev).matches()) {
          throw v.invalid(
              "devices",
              "'" + d.trim() + "' is not a device: each must be auto, all, cpu or cuda:N");
        }
        if (dev.startsWith("cuda:") && list.contains(dev)) {
          throw v.invalid("devices", dev + " is listed twice for one model; one replica per GPU");
        }
        list.add(dev);
      }
      if (out.put(model, List.copyOf(list)) != null) {
        throw v.invalid(
            "devices",
            model.equals("*")
                ? "has two lists for every model"
                : "has two lists for model " + model);
      }
    }
    return Collections.unmodifiableMap(out);
  }

  /**
   * {@code auto}: CUDA event timers on {@code cuda:N} where CUDA timing works, host timers
   * otherwise; {@code host}: host timers everywhere (the CUDA driver is never touched).
   */
  public String timer() {
    return timer;
  }

  public Path dataDir() {
    return dataDir;
  }

  /** External JDBC URL, or null for the embedded database. */
  public String dbUrl() {
    return dbUrl;
  }

  public int maxBodyBytes() {
    return maxBodyBytes;
  }

  /** Netty event loop threads; 0 lets Netty choose (twice the cores). */
  public int ioThreads() {
    return ioThreads;
  }

  /** Threads for blocking work off the event loops (API key lookups, usage queries). */
  public int blockingThreads() {
    return blockingThreads;
  }

  /** Open connections at most; more are answered 503 at accept and closed. */
  public int maxConnections() {
    return maxConnections;
  }

  /** Open connections from one client IP address at most; more are answered 503 and closed. */
  public int maxConnectionsPerAddress() {
    return maxConnectionsPerAddress;
  }

  /** A connection with no request in flight and no traffic for this long is closed. */
  public Duration idleTimeout() {
    return idleTimeout;
  }

  public Duration requestTimeout() {
    return requestTimeout;
  }

  public int maxTokensDefault() {
    return maxTokensDefault;
  }

  public int maxTokensCap() {
    return maxTokensCap;
  }

  /**
   * Most bytes of a streamed response that may wait in the server for a slow reader; past it the
   * connection is dropped and the generation cancelled (charged for the steps it ran).
   */
  public long streamBufferBytes() {
    return streamBufferBytes;
  }

  /** {@code SO_SNDBUF} of accepted connections, or 0 for the OS default (autotuned). */
  public int socketSendBuffer() {
    return (int) socketSendBuffer;
  }

  /** How long shutdown lets running generations finish before cancelling them. */
  public Duration shutdownGrace() {
    return shutdownGrace;
  }

  @Override
  public String toString() {
    return "ServerConfig{host="
        + host
        + ", port="
        + port
        + ", modelsDir="
        + modelsDir
        + ", device="
        + device
        + (devices.isEmpty() ? "" : ", devices=" + devices)
        + ", dataDir="
        + dataDir
        + ", db="
        + (dbUrl == null ? "embedded" : dbUrl)
        + ", ledger="
        + durability
        + (allowUnsafeDatabase ? " (unsafe database allowed)" : "")
        + (ledgerWriters == 1 ? "" : " with " + ledgerWriters + " writers")
        + (commitPoint == CommitPoint.LOCAL
            ? " (commit point local, max " + commitLogMaxBytes + " bytes)"
            : "")
        + ", outbox="
        + outboxDir
        + " (max "
        + outboxMaxBytes
        + " bytes), retention="
        + retention.retention().toDays()
        + "d, admin="
        + (adminToken == null ? "off" : "on")
        + ", keyCacheTtl="
        + keyCacheTtl
        + ", authThrottle="
        + authMaxFailures
        + "/"
        + authFailureWindow
        + ", maxBodyBytes="
        + maxBodyBytes
        + ", scheduler="
        + schedulerConfig()
        + ", maxTokens="
        + maxTokensDefault
        + "/"
        + maxTokensCap
        + "}";
  }

  /** Collects raw settings; {@link #build()} parses and validates them all at once. */
  public static final class Builder {
    private final ConfigLoader loader = ConfigLoader.withDefaults(KEYS);

    private Builder() {}

    /**
     * Sets a raw value as it would appear in the properties file; blank returns the key to its
     * default.
     *
     * @throws IllegalArgumentException if {@code key} is not one of {@link #KEYS}
     */
    public Builder set(String key, String value) {
      loader.set(key, value, ConfigSource.code());
      return this;
    }

    public Builder port(int port) {
      return set("port", Integer.toString(port));
    }

    public Builder host(String host) {
      return set("host", host);
    }

    public Builder modelsDir(Path dir) {
      return set("models.dir", dir.toString());
    }

    public Builder dataDir(Path dir) {
      return set("data.dir", dir.toString());
    }

    public Builder device(String device) {
      return set("device", device);
    }

    /** {@code devices}: see {@link ServerConfig#devicesFor}. */
    public Builder devices(String devices) {
      return set("devices", devices);
    }

    /**
     * Parses and validates every value.
     *
     * @throws IllegalArgumentException naming the first bad key, its value and its source
     */
    public ServerConfig build() {
      return new ServerConfig(loader.values());
    }
  }
}
