package io.gpumeter.server;

import io.gpumeter.batching.SchedulerConfig;
import io.gpumeter.billing.BillingConfig;
import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.Durability;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.RetentionConfig;
import io.gpumeter.metering.WeightPolicy;
import java.io.IOException;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Properties;
import java.util.function.Function;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The server's settings: immutable, validated once, sealed before the server starts.
 *
 * <p>Sources, later ones winning: the built-in defaults, an optional properties file ({@code
 * --config FILE}), environment variables {@code GPUMETER_*}, then system properties {@code
 * gpumeter.*}. Every key {@code a.b_c} has the environment name {@code GPUMETER_A_B_C} and the
 * system property {@code gpumeter.a.b_c}; {@link #KEYS} lists them with their defaults, and
 * server/README.md documents each. A bad value is refused with a message that names the key, the
 * value and where it came from; an unknown key in the properties file is refused too (a typo would
 * otherwise be silently ignored). Unknown environment variables and system properties are ignored,
 * since other parts of the process may use the same prefix.
 *
 * <p>Durations accept {@code 300s}, {@code 2ms}, {@code 500us}, {@code 5m}, {@code 1h}, a bare
 * number of milliseconds, or ISO-8601 ({@code PT5M}).
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
    k.put("data.dir", "./data");
    k.put("db.url", "");
    k.put("db.user", "");
    k.put("db.password", "");
    k.put("db.port", "0");
    k.put("db.binary_cache_dir", "");
    k.put("ledger.durability", "durable");
    k.put("outbox.dir", "");
    k.put("outbox.max_bytes", "1g");
    k.put("retention.days", "90");
    k.put("admin.token", "");
    k.put("http.max_body_bytes", "1048576");
    k.put("http.io_threads", "0");
    k.put("http.blocking_threads", "4");
    k.put("scheduler.max_running", "32");
    k.put("scheduler.token_budget", "256");
    k.put("scheduler.prefill_chunk", "128");
    k.put("scheduler.queue_capacity", "1024");
    k.put("scheduler.request_timeout", "300s");
    k.put("scheduler.batch_window", "2ms");
    k.put("completions.max_tokens_default", "16");
    k.put("completions.max_tokens_cap", "1024");
    k.put("shutdown.grace", "30s");
    KEYS = Collections.unmodifiableMap(k);
  }

  /** Shortest accepted {@code admin.token}. */
  static final int MIN_ADMIN_TOKEN_LENGTH = 16;

  private static final Pattern SIZE = Pattern.compile("(\\d+)\\s*([kmg]?)");
  private static final Pattern DEVICE = Pattern.compile("auto|cpu|cuda:(0|[1-9][0-9]{0,2})");
  private static final Pattern DURATION = Pattern.compile("(\\d+)\\s*(ns|us|ms|s|m|h)?");

  private final String host;
  private final int port;
  private final Path modelsDir;
  private final String device;
  private final Path dataDir;
  private final String dbUrl;
  private final String dbUser;
  private final String dbPassword;
  private final int dbPort;
  private final Path dbBinaryCacheDir;
  private final Durability durability;
  private final Path outboxDir;
  private final long outboxMaxBytes;
  private final RetentionConfig retention;
  private final String adminToken;
  private final int maxBodyBytes;
  private final int ioThreads;
  private final int blockingThreads;
  private final int maxRunning;
  private final int tokenBudget;
  private final int prefillChunk;
  private final int queueCapacity;
  private final Duration requestTimeout;
  private final Duration batchWindow;
  private final int maxTokensDefault;
  private final int maxTokensCap;
  private final Duration shutdownGrace;

  private ServerConfig(Map<String, Value> v) {
    host = str(v, "host", s -> s);
    port = intIn(v, "port", 0, 65535);
    modelsDir = str(v, "models.dir", Path::of);
    device = str(v, "device", s -> s);
    dataDir = str(v, "data.dir", Path::of);
    dbUrl = blankToNull(v.get("db.url").text);
    dbUser = blankToNull(v.get("db.user").text);
    dbPassword = blankToNull(v.get("db.password").text);
    dbPort = intIn(v, "db.port", 0, 65535);
    String cache = blankToNull(v.get("db.binary_cache_dir").text);
    dbBinaryCacheDir = cache == null ? dataDir : str(v, "db.binary_cache_dir", Path::of);
    durability =
        str(
            v,
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
    String outbox = blankToNull(v.get("outbox.dir").text);
    outboxDir = outbox == null ? dataDir.resolve("outbox") : str(v, "outbox.dir", Path::of);
    outboxMaxBytes = bytes(v, "outbox.max_bytes", 4096);
    long days = longIn(v, "retention.days", 1, 365L * 100);
    try {
      retention = RetentionConfig.ofDays(days);
    } catch (IllegalArgumentException e) {
      throw bad(v.get("retention.days"), e.getMessage());
    }
    adminToken = blankToNull(v.get("admin.token").text);
    if (adminToken != null && adminToken.length() < MIN_ADMIN_TOKEN_LENGTH) {
      // the value is a secret: never echo it
      throw new IllegalArgumentException(
          "invalid setting admin.token (from "
              + v.get("admin.token").source
              + "): must be at least "
              + MIN_ADMIN_TOKEN_LENGTH
              + " characters (was "
              + adminToken.length()
              + ")");
    }
    maxBodyBytes = intIn(v, "http.max_body_bytes", 1024, 256 * 1024 * 1024);
    ioThreads = intIn(v, "http.io_threads", 0, 1024);
    blockingThreads = intIn(v, "http.blocking_threads", 1, 256);
    maxRunning = intIn(v, "scheduler.max_running", 1, 4096);
    tokenBudget = intIn(v, "scheduler.token_budget", 1, 1 << 20);
    prefillChunk = intIn(v, "scheduler.prefill_chunk", 1, 1 << 20);
    queueCapacity = intIn(v, "scheduler.queue_capacity", 1, 1 << 24);
    requestTimeout = duration(v, "scheduler.request_timeout", Duration.ofMillis(1));
    batchWindow = duration(v, "scheduler.batch_window", Duration.ZERO);
    maxTokensDefault = intIn(v, "completions.max_tokens_default", 1, 1 << 20);
    maxTokensCap = intIn(v, "completions.max_tokens_cap", 1, 1 << 20);
    shutdownGrace = duration(v, "shutdown.grace", Duration.ZERO);

    if (host.isBlank()) {
      throw bad(v.get("host"), "must not be blank");
    }
    if (!DEVICE.matcher(device).matches()) {
      throw bad(v.get("device"), "must be auto, cpu or cuda:N");
    }
    if (tokenBudget < maxRunning) {
      throw bad(
          v.get("scheduler.token_budget"),
          "must be >= scheduler.max_running ("
              + maxRunning
              + ") so every running sequence can"
              + " decode in one step");
    }
    if (maxTokensDefault > maxTokensCap) {
      throw bad(
          v.get("completions.max_tokens_default"),
          "must be <= completions.max_tokens_cap (" + maxTokensCap + ")");
    }
    if (dbUrl != null && !dbUrl.startsWith("jdbc:postgresql:")) {
      throw bad(v.get("db.url"), "must start with jdbc:postgresql:");
    }
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
   * Reads the process's configuration: defaults, then {@code file} if not null, then {@code
   * System.getenv()}, then {@code System.getProperties()}.
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
    Builder b = builder();
    if (file != null) {
      Properties p = new Properties();
      try (Reader r = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
        p.load(r);
      }
      for (String name : p.stringPropertyNames()) {
        String key = name.startsWith("gpumeter.") ? name.substring("gpumeter.".length()) : name;
        if (!KEYS.containsKey(key)) {
          throw new IllegalArgumentException(
              "unknown setting '" + name + "' in " + file + "; known settings: " + KEYS.keySet());
        }
        b.set(key, p.getProperty(name), "file " + file);
      }
    }
    for (String key : KEYS.keySet()) {
      String envName = envName(key);
      String value = env.get(envName);
      if (value != null) {
        b.set(key, value, "environment variable " + envName);
      }
    }
    for (String key : KEYS.keySet()) {
      String value = system.getProperty("gpumeter." + key);
      if (value != null) {
        b.set(key, value, "system property gpumeter." + key);
      }
    }
    return b.build();
  }

  /** {@code models.dir} becomes {@code GPUMETER_MODELS_DIR}. */
  public static String envName(String key) {
    return "GPUMETER_" + key.toUpperCase(Locale.ROOT).replace('.', '_');
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
        WeightPolicy.tokens());
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
            .binaryCacheDirectory(dbBinaryCacheDir);
    if (dbUrl != null) {
      b.jdbcUrl(dbUrl).user(dbUser).password(dbPassword);
    } else {
      b.port(dbPort);
    }
    return b;
  }

  /**
   * The ledger's settings: {@code ledger.durability}, the outbox ({@code outbox.dir}, by default
   * {@code data.dir/outbox}; {@code outbox.max_bytes}), and raw-record retention ({@code
   * retention.days}, partition maintenance at start and then hourly).
   */
  public BillingConfig billingConfig() {
    return BillingConfig.defaults()
        .withLedger(
            LedgerConfig.custom()
                .durability(durability)
                .outboxDirectory(outboxDir)
                .outboxMaxBytes(outboxMaxBytes)
                .build())
        .withRetention(retention);
  }

  /** When a completion's response may leave: once its charge is durable, or once queued. */
  public Durability durability() {
    return durability;
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

  public Duration requestTimeout() {
    return requestTimeout;
  }

  public int maxTokensDefault() {
    return maxTokensDefault;
  }

  public int maxTokensCap() {
    return maxTokensCap;
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
        + ", dataDir="
        + dataDir
        + ", db="
        + (dbUrl == null ? "embedded" : dbUrl)
        + ", ledger="
        + durability
        + ", outbox="
        + outboxDir
        + " (max "
        + outboxMaxBytes
        + " bytes), retention="
        + retention.retention().toDays()
        + "d, admin="
        + (adminToken == null ? "off" : "on")
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

  // ------------------------------------------------------------------ parsing

  private record Value(String key, String text, String source) {}

  private static IllegalArgumentException bad(Value v, String why) {
    return new IllegalArgumentException(
        "invalid setting " + v.key + "='" + v.text + "' (from " + v.source + "): " + why);
  }

  private static <T> T str(Map<String, Value> v, String key, Function<String, T> parse) {
    Value value = v.get(key);
    try {
      return parse.apply(value.text.trim());
    } catch (RuntimeException e) {
      throw bad(value, e.getMessage());
    }
  }

  private static int intIn(Map<String, Value> v, String key, int min, int max) {
    return (int) longIn(v, key, min, max);
  }

  private static long longIn(Map<String, Value> v, String key, long min, long max) {
    Value value = v.get(key);
    long n;
    try {
      n = Long.parseLong(value.text.trim());
    } catch (NumberFormatException e) {
      throw bad(value, "not an integer");
    }
    if (n < min || n > max) {
      throw bad(value, "must be in [" + min + ", " + max + "]");
    }
    return n;
  }

  /** Bytes, or with a {@code k}, {@code m} or {@code g} suffix (powers of 1024). */
  private static long bytes(Map<String, Value> v, String key, long min) {
    Value value = v.get(key);
    Matcher m = SIZE.matcher(value.text.trim().toLowerCase(Locale.ROOT));
    long n;
    try {
      if (!m.matches()) {
        throw new NumberFormatException();
      }
      long unit =
          switch (m.group(2)) {
            case "k" -> 1L << 10;
            case "m" -> 1L << 20;
            case "g" -> 1L << 30;
            default -> 1L;
          };
      n = Math.multiplyExact(Long.parseLong(m.group(1)), unit);
    } catch (NumberFormatException | ArithmeticException e) {
      throw bad(value, "not a size (examples: 1073741824, 512m, 1g)");
    }
    if (n < min) {
      throw bad(value, "must be at least " + min + " bytes");
    }
    return n;
  }

  private static Duration duration(Map<String, Value> v, String key, Duration min) {
    Value value = v.get(key);
    Duration d;
    try {
      d = parseDuration(value.text);
    } catch (RuntimeException e) {
      throw bad(value, "not a duration (examples: 300s, 2ms, 5m, PT5M)");
    }
    if (d.compareTo(min) < 0) {
      throw bad(value, "must be at least " + min);
    }
    return d;
  }

  static Duration parseDuration(String text) {
    String s = text.trim().toLowerCase(Locale.ROOT);
    if (s.startsWith("p")) {
      return Duration.parse(s.toUpperCase(Locale.ROOT));
    }
    Matcher m = DURATION.matcher(s);
    if (!m.matches()) {
      throw new IllegalArgumentException("not a duration: " + text);
    }
    long n = Long.parseLong(m.group(1));
    String unit = m.group(2) == null ? "ms" : m.group(2);
    return switch (unit) {
      case "ns" -> Duration.ofNanos(n);
      case "us" -> Duration.ofNanos(Math.multiplyExact(n, 1000L));
      case "ms" -> Duration.ofMillis(n);
      case "s" -> Duration.ofSeconds(n);
      case "m" -> Duration.ofMinutes(n);
      case "h" -> Duration.ofHours(n);
      default -> throw new IllegalArgumentException(unit);
    };
  }

  private static String blankToNull(String s) {
    return s == null || s.isBlank() ? null : s.trim();
  }

  /** Collects raw settings; {@link #build()} parses and validates them all at once. */
  public static final class Builder {
    private final Map<String, Value> values = new LinkedHashMap<>();

    private Builder() {
      KEYS.forEach((k, d) -> values.put(k, new Value(k, d, "default")));
    }

    /**
     * Sets a raw value as it would appear in the properties file.
     *
     * @throws IllegalArgumentException if {@code key} is not one of {@link #KEYS}
     */
    public Builder set(String key, String value) {
      return set(key, value, "code");
    }

    Builder set(String key, String value, String source) {
      if (!KEYS.containsKey(key)) {
        throw new IllegalArgumentException(
            "unknown setting '" + key + "'; known: " + KEYS.keySet());
      }
      values.put(key, new Value(key, Objects.requireNonNull(value, key), source));
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

    /**
     * Parses and validates every value.
     *
     * @throws IllegalArgumentException naming the first bad key, its value and its source
     */
    public ServerConfig build() {
      return new ServerConfig(values);
    }
  }
}
