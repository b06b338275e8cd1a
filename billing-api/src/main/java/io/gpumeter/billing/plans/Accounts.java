package io.gpumeter.billing.plans;

import io.gpumeter.billing.Account;
import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.ConflictException;
import io.gpumeter.billing.NotFoundException;
import io.gpumeter.billing.pricing.Currencies;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import javax.sql.DataSource;

/** Accounts: create with a currency and postpaid choice, list, suspend, resume. */
public final class Accounts {
  private static final String COLUMNS = "id, name, currency, status, postpaid_allowed, created_at";
  private final DataSource dataSource;

  public Accounts(DataSource dataSource) {
    this.dataSource = dataSource;
  }

  /**
   * Creates an account.
   *
   * @throws IllegalArgumentException for a bad name, an unknown currency or a name already taken
   *     (nothing changes)
   * @throws BillingException if the database fails
   */
  public Account create(String name, String currency, boolean postpaidAllowed) {
    if (name == null || name.isBlank() || name.length() > 200) {
      throw new IllegalArgumentException(
          "account name must be 1-200 characters, was '" + name + "'");
    }
    Currencies.require(currency);
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "INSERT INTO accounts (name, currency, postpaid_allowed) VALUES (?, ?, ?)"
                    + " ON CONFLICT (name) DO NOTHING RETURNING "
                    + COLUMNS)) {
      ps.setString(1, name);
      ps.setString(2, currency);
      ps.setBoolean(3, postpaidAllowed);
      try (ResultSet rs = ps.executeQuery()) {
        if (!rs.next()) {
          throw new ConflictException("an account named '" + name + "' exists already");
        }
        return read(rs);
      }
    } catch (SQLException e) {
      throw new BillingException("could not create account '" + name + "'", e);
    }
  }

  /** Every account, by id. */
  public List<Account> list() {
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT " + COLUMNS + " FROM accounts ORDER BY id");
        ResultSet rs = ps.executeQuery()) {
      List<Account> out = new ArrayList<>();
      while (rs.next()) {
        out.add(read(rs));
      }
      return out;
    } catch (SQLException e) {
      throw new BillingException("could not list accounts", e);
    }
  }

  /** The account named {@code name}, if any. */
  public Optional<Account> find(String name) {
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT " + COLUMNS + " FROM accounts WHERE name = ?")) {
      ps.setString(1, name);
      try (ResultSet rs = ps.executeQuery()) {
        return rs.next() ? Optional.of(read(rs)) : Optional.empty();
      }
    } catch (SQLException e) {
      throw new BillingException("could not read account '" + name + "'", e);
    }
  }

  /**
   * The account named {@code name}.
   *
   * @throws IllegalArgumentException if there is none
   */
  public Account require(String name) {
    return find(name)
        .orElseThrow(() -> new NotFoundException("account", "no account named '" + name + "'"));
  }

  /**
   * Sets the status ({@link Account#ACTIVE} or {@link Account#SUSPENDED}).
   *
   * @throws IllegalArgumentException for an unknown account or status
   */
  public Account setStatus(String name, String status) {
    if (!Account.ACTIVE.equals(status) && !Account.SUSPENDED.equals(status)) {
      throw new IllegalArgumentException(
          "status must be active or suspended, was '" + status + "'");
    }
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "UPDATE accounts SET status = ? WHERE name = ? RETURNING " + COLUMNS)) {
      ps.setString(1, status);
      ps.setString(2, name);
      try (ResultSet rs = ps.executeQuery()) {
        if (!rs.next()) {
          throw new NotFoundException("account", "no account named '" + name + "'");
        }
        return read(rs);
      }
    } catch (SQLException e) {
      throw new BillingException("could not change account '" + name + "'", e);
    }
  }

  static Account read(ResultSet rs) throws SQLException {
    return new Account(
        rs.getLong(1),
        rs.getString(2),
        rs.getString(3),
        rs.getString(4),
        rs.getBoolean(5),
        rs.getTimestamp(6).toInstant());
  }
}
