package io.gpumeter.billing.keys;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import com.github.benmanes.caffeine.cache.Expiry;
import com.github.benmanes.caffeine.cache.Ticker;
import io.gpumeter.billing.ApiKeyCacheConfig;
import io.gpumeter.billing.ApiKeyInfo;
import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.ApiKeyStateException;
import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.KeyScope;
import io.gpumeter.billing.RotatedApiKey;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.atomic.LongAdder;
import javax.sql.DataSource;

/**
 * Creates, authenticates and revokes API keys.
 *
 * <p>Key format: {@code gm_} followed by {@value #RANDOM_CHARS} characters drawn uniformly from
 * {@code [0-9A-Za-z]} by a {@link SecureRandom} (about 238 bits). Only the SHA-256 of the whole key
 * (32 bytes) and its first {@value #PREFIX_LENGTH} characters are stored. A presented key is looked
 * up by its hash, so no comparison of secrets happens here.
 *
 * <p>Cache: lookups go through a bounded Caffeine cache keyed by the hash; valid keys stay for
 * {@link ApiKeyCacheConfig#positiveTtl()}, unknown or revoked ones for the shorter {@link
 * ApiKeyCacheConfig#negativeTtl()}. Malformed keys are rejected before the cache. {@link #revoke}
 * and {@link #rotate} clear this instance's entry at once; other instances (another server, the
 * command-line tools' process) notice within their positive TTL, which is the bound on how long a
 * key revoked elsewhere is still accepted.
 *
 * <p>Wrong keys: each distinct wrong key is one cache miss and so one database lookup; the negative
 * entries only spare repeats of the same key. What bounds the lookups an attacker can cause is the
 * server's per-address throttle of failed authentications, checked before this class.
 *
 * <p>All methods do blocking JDBC (except on a cache hit): call them off the event loop, except
 * {@link #cachedPrincipal}, which only reads the cache. Thread safe.
 */
public final class ApiKeys {
  public static final String KEY_PREFIX = "gm_";
  public static final int RANDOM_CHARS = 40;
  public static final int KEY_LENGTH = KEY_PREFIX.length() + RANDOM_CHARS;
  public static final int PREFIX_LENGTH = 12;

  private static final String ALPHABET =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  private static final int MAX_ACCOUNT_NAME = 200;

  /** Longest key label, in characters (UTF-16 units; the V13 CHECK counts code points, fewer). */
  public static final int MAX_LABEL = 200;

  private static final String SELECT_INFO =
      "SELECT k.id, k.account_id, a.name, k.prefix, k.created_at, k.revoked_at, k.scope,"
          + " k.label FROM api_keys k JOIN accounts a ON a.id = k.account_id";

  private final DataSource dataSource;
  private final SecureRandom random = new SecureRandom();
  private final Cache<String, Optional<ApiKeyPrincipal>> cache;
  private final LongAdder lookups = new LongAdder();

  public ApiKeys(DataSource dataSource) {
    this(dataSource, ApiKeyCacheConfig.defaults(), Ticker.systemTicker());
  }

  public ApiKeys(DataSource dataSource, ApiKeyCacheConfig cacheConfig, Ticker ticker) {
    this.dataSource = Objects.requireNonNull(dataSource, "dataSource");
    long positive = cacheConfig.positiveTtl().toNanos();
    long negative = cacheConfig.negativeTtl().toNanos();
    this.cache =
        Caffeine.newBuilder()
            .maximumSize(cacheConfig.maximumSize())
            .ticker(ticker)
            .expireAfter(
                new Expiry<String, Optional<ApiKeyPrincipal>>() {
                  @Override
                  public long expireAfterCreate(
                      String key, Optional<ApiKeyPrincipal> value, long currentTime) {
                    return value.isPresent() ? positive : negative;
                  }

                  @Override
                  public long expireAfterUpdate(
                      String key,
                      Optional<ApiKeyPrincipal> value,
                      long currentTime,
                      long currentDuration) {
                    return value.isPresent() ? positive : negative;
                  }

                  @Override
                  public long expireAfterRead(
                      String key,
                      Optional<ApiKeyPrincipal> value,
                      long currentTime,
                      long currentDuration) {
                    return currentDuration;
                  }
                })
            .build();
  }

  /**
   * Creates a key for {@code accountName}, creating the account if it does not exist.
   *
   * @return the new key; its plaintext cannot be retrieved again
   * @throws IllegalArgumentException if the name is blank or longer than 200 characters
   * @throws BillingException if the database fails
   */
  public CreatedApiKey create(String accountName) {
    return create(accountName, KeyScope.INFERENCE);
  }

  /**
   * Creates a key of {@code scope} for {@code accountName}, creating the account if it does not
   * exist.
   *
   * @return the new key; its plaintext cannot be retrieved again
   * @throws IllegalArgumentException if the name is blank or longer than 200 characters
   * @throws BillingException if the database fails
   */
  public CreatedApiKey create(String accountName, KeyScope scope) {
    return create(accountName, scope, null);
  }

  /**
   * Creates a key of {@code scope} with {@code label} (null for none) for {@code accountName},
   * creating the account if it does not exist.
   *
   * @return the new key; its plaintext cannot be retrieved again
   * @throws IllegalArgumentException if the name is blank or longer than 200 characters, or the
   *     label is not valid ({@link #validateLabel}); nothing is written then
   * @throws BillingException if the database fails
   */
  public CreatedApiKey create(String accountName, KeyScope scope, String label) {
    Objects.requireNonNull(scope, "scope");
    String name = validateAccountName(accountName);
    String checkedLabel = validateLabel(label);
    try (Connection c = dataSource.getConnection()) {
      c.setAutoCommit(false);
      try {
        CreatedApiKey created = insertKey(c, accountId(c, name), name, scope, checkedLabel);
        c.commit();
        return created;
      } catch (SQLException | RuntimeException e) {
        c.rollback();
        throw e;
      }
    } catch (SQLException e) {
      throw new BillingException("could not create an API key for account '" + name + "'", e);
    }
  }

  private CreatedApiKey insertKey(
      Connection c, long accountId, String accountName, KeyScope scope, String label)
      throws SQLException {
    String plaintext = generateKey();
    String prefix = plaintext.substring(0, PREFIX_LENGTH);
    try (PreparedStatement ps =
        c.prepareStatement(
            "INSERT INTO api_keys (account_id, prefix, key_hash, scope, label)"
                + " VALUES (?, ?, ?, ?, ?)"
                + " RETURNING id, created_at")) {
      ps.setLong(1, accountId);
      ps.setString(2, prefix);
      ps.setBytes(3, sha256(plaintext));
      ps.setString(4, scope.dbName());
      ps.setString(5, label);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return new CreatedApiKey(
            rs.getLong(1),
            accountId,
            accountName,
            prefix,
            plaintext,
            rs.getTimestamp(2).toInstant(),
            scope,
            label);
      }
    }
  }

  private static long accountId(Connection c, String name) throws SQLException {
    try (PreparedStatement ins =
        c.prepareStatement(
            "INSERT INTO accounts (name) VALUES (?) ON CONFLICT (name) DO NOTHING RETURNING id")) {
      ins.setString(1, name);
      try (ResultSet rs = ins.executeQuery()) {
        if (rs.next()) {
          return rs.getLong(1);
        }
      }
    }
    try (PreparedStatement sel = c.prepareStatement("SELECT id FROM accounts WHERE name = ?")) {
      sel.setString(1, name);
      try (ResultSet rs = sel.executeQuery()) {
        if (!rs.next()) {
          throw new SQLException("account '" + name + "' vanished while creating a key");
        }
        return rs.getLong(1);
      }
    }
  }

  /**
   * The principal of a valid, unrevoked key, or empty for anything else (null, malformed, unknown,
   * revoked).
   *
   * @throws BillingException if the database fails (not cached)
   */
  public Optional<ApiKeyPrincipal> authenticate(String presented) {
    if (!isWellFormed(presented)) {
      return Optional.empty();
    }
    byte[] hash = sha256(presented);
    return cache.get(HexFormat.of().formatHex(hash), k -> lookup(hash));
  }

  /**
   * The principal of a valid, unrevoked key when this instance's cache holds it now; empty
   * otherwise (not cached, cached as unknown or revoked, or malformed). Never touches the database,
   * so it may run on an event loop: a hit spares the hop to a blocking thread that {@link
   * #authenticate} needs on a miss. Revocation drops the entry as for {@link #authenticate}.
   */
  public Optional<ApiKeyPrincipal> cachedPrincipal(String presented) {
    if (!isWellFormed(presented)) {
      return Optional.empty();
    }
    Optional<ApiKeyPrincipal> hit = cache.getIfPresent(HexFormat.of().formatHex(sha256(presented)));
    return hit != null ? hit : Optional.empty();
  }

  private Optional<ApiKeyPrincipal> lookup(byte[] hash) {
    lookups.increment();
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT k.id, k.account_id, a.name, k.prefix, k.scope FROM api_keys k"
                    + " JOIN accounts a ON a.id = k.account_id"
                    + " WHERE k.key_hash = ? AND k.revoked_at IS NULL")) {
      ps.setBytes(1, hash);
      try (ResultSet rs = ps.executeQuery()) {
        if (!rs.next()) {
          return Optional.empty();
        }
        return Optional.of(
            new ApiKeyPrincipal(
                rs.getLong(1),
                rs.getLong(2),
                rs.getString(3),
                rs.getString(4),
                KeyScope.parse(rs.getString(5))));
      }
    } catch (SQLException e) {
      throw new BillingException("could not look up an API key", e);
    }
  }

  /**
   * Revokes a key: it stops authenticating through this instance at once (its cache entry is
   * dropped), through other instances (other processes) when their invalidation listener hears of
   * it (migration V11's notification, within about a second), or within their cache's {@link
   * ApiKeyCacheConfig#positiveTtl()} while they are not listening.
   *
   * @return the key as it is now, revoked
   * @throws ApiKeyStateException if no key has this id, or it was revoked before
   * @throws BillingException if the database fails
   */
  public ApiKeyInfo revoke(long keyId) {
    try (Connection c = dataSource.getConnection()) {
      c.setAutoCommit(false);
      try {
        Revoked revoked = revoke(c, keyId);
        c.commit();
        cache.invalidate(revoked.cacheKey());
        return revoked.info();
      } catch (SQLException | RuntimeException e) {
        c.rollback();
        throw e;
      }
    } catch (SQLException e) {
      throw new BillingException("could not revoke API key " + keyId, e);
    }
  }

  /**
   * Rotates a key: in one transaction, a new key for the same account is created and the old one is
   * revoked, at once (no grace period: a client that needs one creates a second key with {@link
   * #create} and revokes the first when it has switched).
   *
   * @throws ApiKeyStateException if no key has this id, or it was revoked before
   * @throws BillingException if the database fails
   */
  public RotatedApiKey rotate(long keyId) {
    try (Connection c = dataSource.getConnection()) {
      c.setAutoCommit(false);
      try {
        Revoked revoked = revoke(c, keyId);
        ApiKeyInfo old = revoked.info();
        CreatedApiKey created =
            insertKey(c, old.accountId(), old.accountName(), old.scope(), old.label());
        c.commit();
        cache.invalidate(revoked.cacheKey());
        return new RotatedApiKey(created, old);
      } catch (SQLException | RuntimeException e) {
        c.rollback();
        throw e;
      }
    } catch (SQLException e) {
      throw new BillingException("could not rotate API key " + keyId, e);
    }
  }

  /**
   * Revokes in the caller's transaction. The caller drops the cache entry after the commit: a
   * lookup of that key holds the entry's lock while it reads, so one that read the row before the
   * commit is either dropped by that invalidation or waited for by it.
   */
  private record Revoked(ApiKeyInfo info, String cacheKey) {}

  private Revoked revoke(Connection c, long keyId) throws SQLException {
    try (PreparedStatement ps =
        c.prepareStatement(
            "UPDATE api_keys k SET revoked_at = now() FROM accounts a"
                + " WHERE k.id = ? AND k.revoked_at IS NULL AND a.id = k.account_id"
                + " RETURNING k.id, k.account_id, a.name, k.prefix, k.created_at, k.revoked_at,"
                + " k.scope, k.label, k.key_hash")) {
      ps.setLong(1, keyId);
      try (ResultSet rs = ps.executeQuery()) {
        if (!rs.next()) {
          throw new ApiKeyStateException(
              keyId,
              find(c, keyId).isPresent()
                  ? ApiKeyStateException.Problem.REVOKED
                  : ApiKeyStateException.Problem.UNKNOWN);
        }
        return new Revoked(info(rs), HexFormat.of().formatHex(rs.getBytes(9)));
      }
    }
  }

  /**
   * Keys of {@code accountName} (every key when null), oldest first, valid and revoked. Never the
   * secret.
   *
   * @throws BillingException if the database fails
   */
  public List<ApiKeyInfo> list(String accountName) {
    String name = accountName == null ? null : validateAccountName(accountName);
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                SELECT_INFO + (name == null ? "" : " WHERE a.name = ?") + " ORDER BY k.id")) {
      if (name != null) {
        ps.setString(1, name);
      }
      try (ResultSet rs = ps.executeQuery()) {
        List<ApiKeyInfo> keys = new ArrayList<>();
        while (rs.next()) {
          keys.add(info(rs));
        }
        return keys;
      }
    } catch (SQLException e) {
      throw new BillingException("could not list API keys", e);
    }
  }

  /**
   * The key with this id, revoked or not.
   *
   * @throws BillingException if the database fails
   */
  public Optional<ApiKeyInfo> find(long keyId) {
    try (Connection c = dataSource.getConnection()) {
      return find(c, keyId);
    } catch (SQLException e) {
      throw new BillingException("could not read API key " + keyId, e);
    }
  }

  private static Optional<ApiKeyInfo> find(Connection c, long keyId) throws SQLException {
    try (PreparedStatement ps = c.prepareStatement(SELECT_INFO + " WHERE k.id = ?")) {
      ps.setLong(1, keyId);
      try (ResultSet rs = ps.executeQuery()) {
        return rs.next() ? Optional.of(info(rs)) : Optional.empty();
      }
    }
  }

  private static ApiKeyInfo info(ResultSet rs) throws SQLException {
    Timestamp revoked = rs.getTimestamp(6);
    return new ApiKeyInfo(
        rs.getLong(1),
        rs.getLong(2),
        rs.getString(3),
        rs.getString(4),
        rs.getTimestamp(5).toInstant(),
        revoked == null ? null : revoked.toInstant(),
        KeyScope.parse(rs.getString(7)),
        rs.getString(8));
  }

  /** How many lookups went to the database (cache misses of well-formed keys) since creation. */
  public long databaseLookups() {
    return lookups.sum();
  }

  /**
   * Drops every cached lookup: for tests and admin tools, and after a gap in the cross-replica
   * invalidations ({@code db.InvalidationListener}), when what changed meanwhile is unknown.
   */
  public void invalidateCache() {
    cache.invalidateAll();
  }

  /**
   * Drops the cached lookup of the key whose SHA-256 hash is {@code hashHex} (lower-case hex, as
   * the {@code api_key:} notifications of migration V11 carry it), so a key revoked by another
   * process stops authenticating here. A lookup of that key in flight is waited for, as in {@link
   * #revoke}.
   */
  public void invalidateCachedHash(String hashHex) {
    cache.invalidate(hashHex.toLowerCase(java.util.Locale.ROOT));
  }

  /** True if {@code s} has the shape of a key: {@code gm_} and 40 base62 characters. */
  public static boolean isWellFormed(String s) {
    if (s == null || s.length() != KEY_LENGTH || !s.startsWith(KEY_PREFIX)) {
      return false;
    }
    for (int i = KEY_PREFIX.length(); i < s.length(); i++) {
      char ch = s.charAt(i);
      boolean ok = (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
      if (!ok) {
        return false;
      }
    }
    return true;
  }

  private String generateKey() {
    StringBuilder sb = new StringBuilder(KEY_LENGTH).append(KEY_PREFIX);
    byte[] buf = new byte[64];
    while (sb.length() < KEY_LENGTH) {
      random.nextBytes(buf);
      for (int i = 0; i < buf.length && sb.length() < KEY_LENGTH; i++) {
        int v = buf[i] & 0x3f; // 0..63; rejecting 62 and 63 keeps the draw uniform
        if (v < ALPHABET.length()) {
          sb.append(ALPHABET.charAt(v));
        }
      }
    }
    return sb.toString();
  }

  /**
   * A key label as stored: null stays null (no label); otherwise stripped of surrounding white
   * space, it must be 1-{@value #MAX_LABEL} characters with no control characters.
   *
   * @throws IllegalArgumentException naming what is wrong with it
   */
  public static String validateLabel(String label) {
    if (label == null) {
      return null;
    }
    String l = label.strip();
    if (l.isEmpty()) {
      throw new IllegalArgumentException("label must not be blank (omit it for no label)");
    }
    if (l.length() > MAX_LABEL) {
      throw new IllegalArgumentException(
          "label must be at most " + MAX_LABEL + " characters, was " + l.length());
    }
    if (l.chars().anyMatch(Character::isISOControl)) {
      throw new IllegalArgumentException("label must not contain control characters");
    }
    return l;
  }

  private static String validateAccountName(String accountName) {
    if (accountName == null || accountName.isBlank()) {
      throw new IllegalArgumentException(
          "account name must not be blank, was '" + accountName + "'");
    }
    String name = accountName.strip();
    if (name.length() > MAX_ACCOUNT_NAME) {
      throw new IllegalArgumentException(
          "account name must be at most " + MAX_ACCOUNT_NAME + " characters, was " + name.length());
    }
    return name;
  }

  static byte[] sha256(String key) {
    try {
      return MessageDigest.getInstance("SHA-256").digest(key.getBytes(StandardCharsets.US_ASCII));
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }
}
