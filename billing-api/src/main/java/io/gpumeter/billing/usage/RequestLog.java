package io.gpumeter.billing.usage;

import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.ChargeBreakdown;
import io.gpumeter.billing.ChargedRequest;
import io.gpumeter.billing.pricing.Money;
import io.gpumeter.billing.pricing.Receipts;
import io.gpumeter.billing.pricing.Settlement;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import javax.sql.DataSource;

/**
 * The request log: an account's (or one key's) charged requests, newest first, read from {@code
 * usage_records} with the priced charge and the void beside each.
 *
 * <p><b>Order and cursor:</b> by {@code (finished_at, request_id)} descending, a total order (the
 * request id is unique). A page after the cursor request holds only rows strictly below the
 * cursor's {@code (finished_at, request_id)}, so walking the pages neither repeats nor skips a row
 * that was stored before the walk; a record stored later (an outbox replay after an outage) with an
 * older {@code finished_at} still shows up on the pages below it. Index: {@code
 * usage_records_account_finished_idx} (V17) for the account, {@code usage_records_key_finished_idx}
 * for one key.
 */
final class RequestLog {
  private static final String COLUMNS =
      "SELECT u.request_id, u.api_key_id, u.model, coalesce(u.session_id, u.request_id),"
          + " u.status, u.started_at, u.finished_at, u.prompt_tokens, u.completion_tokens,"
          + " u.device_ns, u.prefill_ns, u.decode_ns, u.steps, a.currency, p.cost_nmicros,"
          + " p.price_version_id, v.reason, u.batch_company_sum, u.kv_byte_ns, u.peak_kv_bytes,"
          // how it was paid (V7, V20): the charge's deduction row, if deducted yet
          + " d.included_ns, coalesce(d.pool_used, d.included_ns::numeric * 1000000),"
          + " d.billable_ns, coalesce(d.unit_price_micros_per_s, p.price_micros_per_s),"
          + " d.credit_nmicros, d.postpaid_nmicros, d.overspend_nmicros"
          + " FROM usage_records u JOIN accounts a ON a.id = u.account_id"
          + " LEFT JOIN charge_prices p ON p.request_id = u.request_id"
          + " LEFT JOIN charge_deductions d ON d.request_id = u.request_id AND d.kind = 'charge'"
          + " LEFT JOIN charge_voids v ON v.request_id = u.request_id"
          + " WHERE u.account_id = ?";

  private final DataSource dataSource;

  RequestLog(DataSource dataSource) {
    this.dataSource = dataSource;
  }

  /**
   * Up to {@code limit} requests of the account (of one key when {@code onlyKey} is set), newest
   * first, below the cursor request {@code before} when it is set.
   *
   * @return empty when {@code before} names no request this caller can see (unknown, another key's
   *     or account's, or pruned by retention)
   */
  Optional<List<ChargedRequest>> page(long accountId, Long onlyKey, int limit, String before) {
    try (Connection c = dataSource.getConnection()) {
      Settlement.settle(c); // the stored charges priced first (V25)
      Timestamp cursorAt = null;
      if (before != null) {
        cursorAt = cursor(c, accountId, onlyKey, before);
        if (cursorAt == null) {
          return Optional.empty();
        }
      }
      StringBuilder sql = new StringBuilder(COLUMNS);
      if (onlyKey != null) {
        sql.append(" AND u.api_key_id = ?");
      }
      if (cursorAt != null) {
        sql.append(" AND (u.finished_at, u.request_id) < (?, ?)");
      }
      sql.append(" ORDER BY u.finished_at DESC, u.request_id DESC LIMIT ?");
      try (PreparedStatement ps = c.prepareStatement(sql.toString())) {
        int i = 1;
        ps.setLong(i++, accountId);
        if (onlyKey != null) {
          ps.setLong(i++, onlyKey);
        }
        if (cursorAt != null) {
          ps.setTimestamp(i++, cursorAt);
          ps.setString(i++, before);
        }
        ps.setInt(i, limit);
        List<ChargedRequest> out = new ArrayList<>(Math.min(limit, 128));
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            out.add(row(rs));
          }
        }
        return Optional.of(out);
      }
    } catch (SQLException e) {
      throw new BillingException("could not read the request log of account " + accountId, e);
    }
  }

  /** The cursor request's {@code finished_at}, or null when the caller cannot see it. */
  private static Timestamp cursor(Connection c, long accountId, Long onlyKey, String requestId)
      throws SQLException {
    // usage_request_ids finds the partition; the record itself says whose it is.
    try (PreparedStatement ps =
        c.prepareStatement(
            "SELECT u.finished_at FROM usage_request_ids r JOIN usage_records u"
                + " ON u.request_id = r.request_id AND u.finished_at = r.finished_at"
                + " WHERE r.request_id = ? AND u.account_id = ?"
                + (onlyKey != null ? " AND u.api_key_id = ?" : ""))) {
      ps.setString(1, requestId);
      ps.setLong(2, accountId);
      if (onlyKey != null) {
        ps.setLong(3, onlyKey);
      }
      try (ResultSet rs = ps.executeQuery()) {
        return rs.next() ? rs.getTimestamp(1) : null;
      }
    }
  }

  private static ChargedRequest row(ResultSet rs) throws SQLException {
    BigDecimal cost = rs.getBigDecimal(15);
    BigInteger exact = cost == null ? null : cost.toBigIntegerExact();
    long version = rs.getLong(16);
    Long priceVersion = rs.wasNull() ? null : version;
    return new ChargedRequest(
        rs.getString(1),
        rs.getLong(2),
        rs.getString(3),
        rs.getString(4),
        rs.getString(5),
        rs.getTimestamp(6).toInstant(),
        rs.getTimestamp(7).toInstant(),
        rs.getInt(8),
        rs.getInt(9),
        rs.getLong(10),
        rs.getLong(11),
        rs.getLong(12),
        rs.getInt(13),
        rs.getString(14),
        exact,
        exact == null ? null : Money.roundToMicros(exact),
        priceVersion,
        rs.getString(17),
        batchCompany(rs.getLong(18), rs.wasNull()),
        rs.getLong(19),
        rs.getLong(20),
        breakdown(rs));
  }

  /** The deduction's columns (21..27), or null when the charge has no deduction row. */
  private static ChargeBreakdown breakdown(ResultSet rs) throws SQLException {
    long included = rs.getLong(21);
    if (rs.wasNull()) {
      return null;
    }
    return Receipts.breakdown(
        included,
        rs.getBigDecimal(22).toBigIntegerExact(),
        rs.getLong(23),
        rs.getLong(24),
        rs.getBigDecimal(25).toBigIntegerExact(),
        rs.getBigDecimal(26).toBigIntegerExact(),
        rs.getBigDecimal(27).toBigIntegerExact());
  }

  private static Long batchCompany(long sum, boolean isNull) {
    return isNull ? null : sum;
  }
}
