package io.gpumeter.billing.plans;

import io.gpumeter.billing.Account;
import io.gpumeter.billing.Balance;
import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.CreditGrant;
import io.gpumeter.billing.pricing.Money;
import io.gpumeter.billing.pricing.Settlement;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.time.Clock;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import javax.sql.DataSource;

/**
 * Prepaid credits and balances. A grant or top-up writes its credit grant and a {@code grant} /
 * {@code topup} balance entry in one transaction; charges take from grants earliest-expiring first
 * ({@code deduction} entries, V7 {@code deduct_charge}); {@link #expire} books what is left of
 * expired grants as {@code expiry} entries. A balance is always the sum of its entries.
 */
public final class Credits {
  private final DataSource dataSource;
  private final Accounts accounts;
  private final Clock clock;

  public Credits(DataSource dataSource, Clock clock) {
    this.dataSource = dataSource;
    this.accounts = new Accounts(dataSource);
    this.clock = clock;
  }

  /**
   * Grants {@code amountMicros} of prepaid credit to {@code account}.
   *
   * @param source {@code grant} or {@code topup}
   * @param expiresAt null for no expiry; otherwise it must be in the future
   * @throws IllegalArgumentException for a missing account, a bad source, an amount <= 0 or an
   *     expiry not in the future (nothing changes)
   */
  public CreditGrant grant(
      String account, String source, long amountMicros, Instant expiresAt, String note) {
    if (!"grant".equals(source) && !"topup".equals(source)) {
      throw new IllegalArgumentException(
          "credit source must be grant or topup, was '" + source + "'");
    }
    if (amountMicros <= 0) {
      throw new IllegalArgumentException(
          "credit amount must be > 0 micro-units, was " + amountMicros);
    }
    Instant now = clock.instant();
    if (expiresAt != null && !expiresAt.isAfter(now)) {
      throw new IllegalArgumentException(
          "credit expiry must be in the future, was " + expiresAt + " (now " + now + ")");
    }
    Account a = accounts.require(account);
    String n = note == null ? "" : note;
    try (Connection c = dataSource.getConnection()) {
      c.setAutoCommit(false);
      try {
        long id;
        Instant grantedAt;
        try (PreparedStatement ps =
            c.prepareStatement(
                "INSERT INTO credit_grants (account_id, source, amount_micros, expires_at,"
                    + " granted_at, note) VALUES (?, ?, ?, ?, ?, ?) RETURNING id, granted_at")) {
          ps.setLong(1, a.id());
          ps.setString(2, source);
          ps.setLong(3, amountMicros);
          ps.setTimestamp(4, expiresAt == null ? null : Timestamp.from(expiresAt));
          ps.setTimestamp(5, Timestamp.from(now));
          ps.setString(6, n);
          try (ResultSet rs = ps.executeQuery()) {
            rs.next();
            id = rs.getLong(1);
            grantedAt = rs.getTimestamp(2).toInstant();
          }
        }
        BigInteger amount = Money.nanoMicros(amountMicros);
        try (PreparedStatement ps =
            c.prepareStatement(
                "INSERT INTO balance_entries (account_id, grant_id, kind, amount_nmicros)"
                    + " VALUES (?, ?, ?, ?)")) {
          ps.setLong(1, a.id());
          ps.setLong(2, id);
          ps.setString(3, source);
          ps.setBigDecimal(4, new BigDecimal(amount));
          ps.executeUpdate();
        }
        c.commit();
        return new CreditGrant(id, a.id(), source, amountMicros, amount, expiresAt, grantedAt, n);
      } catch (SQLException | RuntimeException e) {
        c.rollback();
        throw e;
      }
    } catch (SQLException e) {
      throw new BillingException("could not grant credit to '" + account + "'", e);
    }
  }

  /** The grants of {@code account} with what is left of each, in the order charges use them. */
  public List<CreditGrant> list(String account) {
    Account a = accounts.require(account);
    settle();
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT g.id, g.source, g.amount_micros, coalesce(r.remaining_nmicros, 0),"
                    + " g.expires_at, g.granted_at, g.note FROM credit_grants g"
                    + " LEFT JOIN grant_remaining r ON r.grant_id = g.id WHERE g.account_id = ?"
                    + " ORDER BY g.expires_at NULLS LAST, g.id")) {
      ps.setLong(1, a.id());
      try (ResultSet rs = ps.executeQuery()) {
        List<CreditGrant> out = new ArrayList<>();
        while (rs.next()) {
          Timestamp exp = rs.getTimestamp(5);
          out.add(
              new CreditGrant(
                  rs.getLong(1),
                  a.id(),
                  rs.getString(2),
                  rs.getLong(3),
                  rs.getBigDecimal(4).toBigIntegerExact(),
                  exp == null ? null : exp.toInstant(),
                  rs.getTimestamp(6).toInstant(),
                  rs.getString(7)));
        }
        return out;
      }
    } catch (SQLException e) {
      throw new BillingException("could not list credits of '" + account + "'", e);
    }
  }

  /** The balance of {@code account}: the sum of its entries, and this month's allowance. */
  public Balance balance(String account) {
    Account a = accounts.require(account);
    return balance(a.id(), "'" + account + "'");
  }

  /**
   * The balance of the account with this id (the server's balance cache reads it by the principal's
   * account id).
   *
   * @throws IllegalArgumentException if there is no such account
   */
  public Balance balance(long accountId) {
    return balance(accountId, "account " + accountId);
  }

  private Balance balance(long accountId, String what) {
    Instant now = clock.instant();
    settle();
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT coalesce((SELECT sum(amount_nmicros) FROM balance_entries"
                    + " WHERE account_id = ?), 0),"
                    + " coalesce((SELECT p.included_ns FROM subscriptions s JOIN plans p"
                    + " ON p.id = s.plan_id WHERE s.account_id = ? AND s.active @> ?::timestamptz), 0),"
                    // weighted device-ns used (V20 pool, ppm-ns / 10^6 rounded up, so what is
                    // shown as left is never more than the pool has)
                    + " coalesce((SELECT div(used_pool + 999999, 1000000) FROM allowance_used"
                    + " WHERE account_id = ?"
                    + " AND period = date_trunc('month', ?::timestamptz, 'UTC')::date), 0),"
                    + " (SELECT currency FROM accounts WHERE id = ?)")) {
      Timestamp t = Timestamp.from(now);
      ps.setLong(1, accountId);
      ps.setLong(2, accountId);
      ps.setTimestamp(3, t);
      ps.setLong(4, accountId);
      ps.setTimestamp(5, t);
      ps.setLong(6, accountId);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        String currency = rs.getString(4);
        if (currency == null) {
          throw new IllegalArgumentException("no account " + what);
        }
        BigInteger exact = rs.getBigDecimal(1).toBigIntegerExact();
        return new Balance(
            accountId, currency, exact, Money.roundToMicros(exact), rs.getLong(2), rs.getLong(3));
      }
    } catch (SQLException e) {
      throw new BillingException("could not read the balance of " + what, e);
    }
  }

  /**
   * Books what is left of every grant that expired by now as an {@code expiry} entry. Each
   * account's grants are expired in their own transaction under the account's advisory lock (the
   * lock the V7/V16 deduction and the budget leases take; accounts ascending, the deduction's
   * order), so a deduction never runs between reading a remainder and booking its expiry. Once per
   * grant: the entry brings the remainder to 0 and the remainder is read again under the lock, so a
   * second run, here or on another replica at the same time, books nothing more. Runs on the
   * maintenance scheduler ({@code Billing}).
   *
   * @return the number of grants expired
   */
  public int expire() {
    Timestamp now = Timestamp.from(clock.instant());
    settle();
    try (Connection c = dataSource.getConnection()) {
      List<Long> due = new ArrayList<>();
      try (PreparedStatement ps =
          c.prepareStatement(
              "SELECT DISTINCT account_id FROM grant_remaining"
                  + " WHERE expires_at <= ? AND remaining_nmicros > 0 ORDER BY account_id")) {
        ps.setTimestamp(1, now);
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            due.add(rs.getLong(1));
          }
        }
      }
      int expired = 0;
      c.setAutoCommit(false);
      for (long accountId : due) {
        try {
          try (PreparedStatement lock =
              c.prepareStatement("SELECT pg_advisory_xact_lock(hashtext('account:' || ?))")) {
            lock.setLong(1, accountId);
            lock.execute();
          }
          try (PreparedStatement ps =
              c.prepareStatement(
                  "INSERT INTO balance_entries (account_id, grant_id, kind, amount_nmicros)"
                      + " SELECT account_id, grant_id, 'expiry', -remaining_nmicros"
                      + " FROM grant_remaining WHERE account_id = ? AND expires_at <= ?"
                      + " AND remaining_nmicros > 0 ORDER BY grant_id")) {
            ps.setLong(1, accountId);
            ps.setTimestamp(2, now);
            expired += ps.executeUpdate();
          }
          c.commit();
        } catch (SQLException | RuntimeException e) {
          c.rollback();
          throw e;
        }
      }
      return expired;
    } catch (SQLException e) {
      throw new BillingException("could not expire credits", e);
    }
  }

  /**
   * Differences between the cached remainders and the entries they summarise: each grant's
   * remainder must equal the sum of its entries, and each month's allowance used the sum of its
   * deductions. Empty when consistent.
   */
  public List<String> verifyBalances() {
    settle();
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT 'grant ' || g.id || ': remaining ' || coalesce(r.remaining_nmicros, 0)"
                    + " || ' but entries sum to ' || coalesce(e.s, 0)"
                    + " FROM credit_grants g LEFT JOIN grant_remaining r ON r.grant_id = g.id"
                    + " LEFT JOIN (SELECT grant_id, sum(amount_nmicros) s FROM balance_entries"
                    + " GROUP BY grant_id) e ON e.grant_id = g.id"
                    + " WHERE coalesce(r.remaining_nmicros, 0) <> coalesce(e.s, 0)"
                    + " UNION ALL SELECT 'allowance of account ' || u.account_id || ' in '"
                    + " || u.period || ': used ' || u.used_ns || ' but deductions sum to '"
                    + " || coalesce(d.s, 0) FROM allowance_used u LEFT JOIN (SELECT account_id,"
                    + " usage_period, sum(included_ns) s FROM charge_deductions"
                    + " GROUP BY 1, 2) d ON d.account_id = u.account_id"
                    + " AND d.usage_period = u.period WHERE u.used_ns <> coalesce(d.s, 0)"
                    + " UNION ALL SELECT 'pool of account ' || u.account_id || ' in '"
                    + " || u.period || ': used ' || u.used_pool || ' ppm-ns but deductions sum to '"
                    + " || coalesce(d.s, 0) FROM allowance_used u LEFT JOIN (SELECT account_id,"
                    + " usage_period, sum(coalesce(pool_used, included_ns::numeric * 1000000)) s"
                    + " FROM charge_deductions GROUP BY 1, 2) d ON d.account_id = u.account_id"
                    + " AND d.usage_period = u.period WHERE u.used_pool <> coalesce(d.s, 0)");
        ResultSet rs = ps.executeQuery()) {
      List<String> out = new ArrayList<>();
      while (rs.next()) {
        out.add(rs.getString(1));
      }
      return out;
    } catch (SQLException e) {
      throw new BillingException("could not verify balances", e);
    }
  }

  /** Settles the stored charges first (V25): what is read next is net of every stored charge. */
  private void settle() {
    try {
      Settlement.settle(dataSource);
    } catch (SQLException e) {
      throw new BillingException("could not settle the stored charges", e);
    }
  }
}
