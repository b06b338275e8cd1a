package io.gpumeter.billing.keys;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import com.github.benmanes.caffeine.cache.Expiry;
import com.github.benmanes.caffeine.cache.Ticker;
import io.gpumeter.billing.ApiKeyCacheConfig;
import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.CreatedApiKey;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.util.HexFormat;
import java.util.Objects;
import java.util.Optional;
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
 * clears this instance's entry at once; other replicas notice within the positive TTL.
 *
 * <p>All methods do blocking JDBC (except on a cache hit): call them off the event loop. Thread
 * safe.
 */
public final class ApiKeys {
  public static final String KEY_PREFIX = "gm_";
  public static final int RANDOM_CHARS = 40;
  public static final int KEY_LENGTH = KEY_PREFIX.length() + RANDOM_CHARS;
  public static final int PREFIX_LENGTH = 12;

  private static final String ALPHABET =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  private static final int MAX_ACCOUNT_NAME = 200;

  private final DataSource dataSource;
  private final SecureRandom random = new SecureRandom();
  private final Cache<String, Optional<ApiKeyPrincipal>> cache;

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
    String name = validateAccountName(accountName);
    String plaintext = generateKey();
    String prefix = plaintext.substring(0, PREFIX_LENGTH);
    try (Connection c = dataSource.getConnection()) {
      c.setAutoCommit(false);
      try {
        long accountId = accountId(c, name);
        try (PreparedStatement ps =
            c.prepareStatement(
                "INSERT INTO api_keys (account_id, prefix, key_hash) VALUES (?, ?, ?)"
                    + " RETURNING id, created_at")) {
          ps.setLong(1, accountId);
          ps.setString(2, prefix);
          ps.setBytes(3, sha256(plaintext));
          try (ResultSet rs = ps.executeQuery()) {
            rs.next();
            long keyId = rs.getLong(1);
            Timestamp createdAt = rs.getTimestamp(2);
            c.commit();
            return new CreatedApiKey(
                keyId, accountId, name, prefix, plaintext, createdAt.toInstant());
          }
        }
      } catch (SQLException | RuntimeException e) {
        c.rollback();
        throw e;
      }
    } catch (SQLException e) {
      throw new BillingException("could not create an API key for account '" + name + "'", e);
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

  private Optional<ApiKeyPrincipal> lookup(byte[] hash) {
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT k.id, k.account_id, a.name, k.prefix FROM api_keys k"
                    + " JOIN accounts a ON a.id = k.account_id"
                    + " WHERE k.key_hash = ? AND k.revoked_at IS NULL")) {
      ps.setBytes(1, hash);
      try (ResultSet rs = ps.executeQuery()) {
        if (!rs.next()) {
          return Optional.empty();
        }
        return Optional.of(
            new ApiKeyPrincipal(rs.getLong(1), rs.getLong(2), rs.getString(3), rs.getString(4)));
      }
    } catch (SQLException e) {
      throw new BillingException("could not look up an API key", e);
    }
  }

  /**
   * Revokes a key: it stops authenticating here at once, on other replicas within the cache's
   * positive TTL.
   *
   * @return true if the key existed and was not revoked yet
   * @throws BillingException if the database fails
   */
  public boolean revoke(long keyId) {
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "UPDATE api_keys SET revoked_at = now() WHERE id = ? AND revoked_at IS NULL"
                    + " RETURNING key_hash")) {
      ps.setLong(1, keyId);
      try (ResultSet rs = ps.executeQuery()) {
        if (!rs.next()) {
          return false;
        }
        cache.invalidate(HexFormat.of().formatHex(rs.getBytes(1)));
        return true;
      }
    } catch (SQLException e) {
      throw new BillingException("could not revoke API key " + keyId, e);
    }
  }

  /** Drops every cached lookup (for tests and admin tools). */
  public void invalidateCache() {
    cache.invalidateAll();
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
