package io.gpumeter.billing.idempotency;

import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.IdempotencyClaim;
import io.gpumeter.billing.IdempotencyKeys;
import io.gpumeter.billing.VoidReason;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.Objects;
import javax.sql.DataSource;

/**
 * {@link IdempotencyKeys} in the {@code idempotency_keys} table (migration V9).
 *
 * <p>Concurrency: a claim is one transaction that locks the key's row ({@code SELECT ... FOR
 * UPDATE}) or inserts it ({@code ON CONFLICT DO NOTHING}; losing that race reads the winner's row
 * again), so of two concurrent first attempts exactly one is {@code CLAIMED} and the other is told
 * {@code IN_FLIGHT} (or {@code MISMATCH}). {@link #complete} and {@link #release} match on the
 * request id, so an attempt whose claim was taken over cannot overwrite its successor's row.
 *
 * <p>Crash safety: the claim is committed before the generation starts, and the answer after its
 * charge is durable. An attempt that dies between the two leaves an {@code in_flight} row; once its
 * lease has run out, the next retry takes the claim over and, in the same transaction, voids the
 * old request id's charge ({@link VoidReason#IDEMPOTENT_RETRY}; a void may precede its charge,
 * which a dead process's outbox may still deliver), so the client pays only for the answer it gets.
 */
public final class JdbcIdempotencyKeys implements IdempotencyKeys {
  private static final int HASH_BYTES = 32;

  private final DataSource dataSource;
  private final Clock clock;

  public JdbcIdempotencyKeys(DataSource dataSource, Clock clock) {
    this.dataSource = Objects.requireNonNull(dataSource, "dataSource");
    this.clock = Objects.requireNonNull(clock, "clock");
  }

  @Override
  public IdempotencyClaim claim(
      long apiKeyId, String key, byte[] requestHash, String requestId, Duration lease) {
    checkKey(key);
    Objects.requireNonNull(requestId, "requestId");
    if (requestHash == null || requestHash.length != HASH_BYTES) {
      throw new IllegalArgumentException("requestHash must be 32 bytes (SHA-256)");
    }
    if (lease == null || lease.isNegative() || lease.isZero()) {
      throw new IllegalArgumentException("lease must be positive, was " + lease);
    }
    try (Connection c = dataSource.getConnection()) {
      boolean auto = c.getAutoCommit();
      c.setAutoCommit(false);
      try {
        IdempotencyClaim claim = claim(c, apiKeyId, key, requestHash, requestId, lease);
        c.commit();
        return claim;
      } catch (SQLException | RuntimeException e) {
        c.rollback();
        throw e;
      } finally {
        c.setAutoCommit(auto);
      }
    } catch (SQLException e) {
      throw new BillingException("could not claim the idempotency key", e);
    }
  }

  private IdempotencyClaim claim(
      Connection c, long apiKeyId, String key, byte[] hash, String requestId, Duration lease)
      throws SQLException {
    Instant now = clock.instant();
    // Two rounds at most: if the row is not there, insert it; losing that race to a concurrent
    // insert means the row is there now, and the second round locks and reads it.
    for (int round = 0; round < 2; round++) {
      try (PreparedStatement ps =
          c.prepareStatement(
              "SELECT request_hash, request_id, state, status, body, lease_until, expires_at"
                  + " FROM idempotency_keys WHERE api_key_id = ? AND idempotency_key = ?"
                  + " FOR UPDATE")) {
        ps.setLong(1, apiKeyId);
        ps.setString(2, key);
        try (ResultSet rs = ps.executeQuery()) {
          if (rs.next()) {
            return decide(c, rs, apiKeyId, key, hash, requestId, lease, now);
          }
        }
      }
      try (PreparedStatement ins =
          c.prepareStatement(
              "INSERT INTO idempotency_keys (api_key_id, idempotency_key, request_hash,"
                  + " request_id, state, created_at, lease_until, expires_at)"
                  + " VALUES (?, ?, ?, ?, 'in_flight', ?, ?, ?)"
                  + " ON CONFLICT (api_key_id, idempotency_key) DO NOTHING")) {
        ins.setLong(1, apiKeyId);
        ins.setString(2, key);
        ins.setBytes(3, hash);
        ins.setString(4, requestId);
        ins.setTimestamp(5, Timestamp.from(now));
        ins.setTimestamp(6, Timestamp.from(now.plus(lease)));
        ins.setTimestamp(7, Timestamp.from(now.plus(RETENTION)));
        if (ins.executeUpdate() == 1) {
          return IdempotencyClaim.claimed(requestId, null);
        }
      }
    }
    throw new SQLException("idempotency key row neither insertable nor readable");
  }

  private IdempotencyClaim decide(
      Connection c,
      ResultSet rs,
      long apiKeyId,
      String key,
      byte[] hash,
      String requestId,
      Duration lease,
      Instant now)
      throws SQLException {
    String held = rs.getString("request_id");
    Instant expiresAt = rs.getTimestamp("expires_at").toInstant();
    boolean inFlight = "in_flight".equals(rs.getString("state"));
    if (!expiresAt.isAfter(now)) {
      // Older than the retention and not pruned yet: as if absent, a fresh claim. An attempt
      // that never stored its answer is voided as below.
      String superseded = inFlight ? voidHolder(c, held) : null;
      reclaim(c, apiKeyId, key, hash, requestId, lease, now, true);
      return IdempotencyClaim.claimed(requestId, superseded);
    }
    if (!Arrays.equals(rs.getBytes("request_hash"), hash)) {
      return IdempotencyClaim.mismatch(held);
    }
    if (!inFlight) {
      return IdempotencyClaim.replay(held, rs.getInt("status"), rs.getBytes("body"));
    }
    if (rs.getTimestamp("lease_until").toInstant().isAfter(now)) {
      return IdempotencyClaim.inFlight(held);
    }
    // The holder will never store an answer: its charge (if it is ever stored) is voided here,
    // in the transaction that hands the key to this attempt.
    voidHolder(c, held);
    reclaim(c, apiKeyId, key, hash, requestId, lease, now, false);
    return IdempotencyClaim.claimed(requestId, held);
  }

  private static String voidHolder(Connection c, String held) throws SQLException {
    try (PreparedStatement v =
        c.prepareStatement(
            "INSERT INTO charge_voids (request_id, reason) VALUES (?, ?)"
                + " ON CONFLICT (request_id) DO NOTHING")) {
      v.setString(1, held);
      v.setString(2, VoidReason.IDEMPOTENT_RETRY.dbName());
      v.executeUpdate();
    }
    return held;
  }

  private static void reclaim(
      Connection c,
      long apiKeyId,
      String key,
      byte[] hash,
      String requestId,
      Duration lease,
      Instant now,
      boolean fresh)
      throws SQLException {
    try (PreparedStatement u =
        c.prepareStatement(
            "UPDATE idempotency_keys SET request_hash = ?, request_id = ?, state = 'in_flight',"
                + " status = NULL, body = NULL, completed_at = NULL, lease_until = ?"
                + (fresh ? ", created_at = ?, expires_at = ?" : "")
                + " WHERE api_key_id = ? AND idempotency_key = ?")) {
      int i = 1;
      u.setBytes(i++, hash);
      u.setString(i++, requestId);
      u.setTimestamp(i++, Timestamp.from(now.plus(lease)));
      if (fresh) {
        u.setTimestamp(i++, Timestamp.from(now));
        u.setTimestamp(i++, Timestamp.from(now.plus(RETENTION)));
      }
      u.setLong(i++, apiKeyId);
      u.setString(i, key);
      u.executeUpdate();
    }
  }

  @Override
  public boolean complete(long apiKeyId, String key, String requestId, int status, byte[] body) {
    checkKey(key);
    Objects.requireNonNull(body, "body");
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "UPDATE idempotency_keys SET state = 'done', status = ?, body = ?,"
                    + " completed_at = ? WHERE api_key_id = ? AND idempotency_key = ?"
                    + " AND request_id = ? AND state = 'in_flight'")) {
      ps.setInt(1, status);
      ps.setBytes(2, body);
      ps.setTimestamp(3, Timestamp.from(clock.instant()));
      ps.setLong(4, apiKeyId);
      ps.setString(5, key);
      ps.setString(6, requestId);
      boolean stored = ps.executeUpdate() == 1;
      if (!c.getAutoCommit()) {
        c.commit();
      }
      return stored;
    } catch (SQLException e) {
      throw new BillingException("could not store the answer of idempotency key", e);
    }
  }

  @Override
  public void release(long apiKeyId, String key, String requestId) {
    checkKey(key);
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "DELETE FROM idempotency_keys WHERE api_key_id = ? AND idempotency_key = ?"
                    + " AND request_id = ? AND state = 'in_flight'")) {
      ps.setLong(1, apiKeyId);
      ps.setString(2, key);
      ps.setString(3, requestId);
      ps.executeUpdate();
      if (!c.getAutoCommit()) {
        c.commit();
      }
    } catch (SQLException e) {
      throw new BillingException("could not release the idempotency key", e);
    }
  }

  private static void checkKey(String key) {
    if (!IdempotencyKeys.isValidKey(key)) {
      throw new IllegalArgumentException("an idempotency key is 1..255 printable ASCII characters");
    }
  }
}
