package io.gpumeter.billing.plans;

import io.gpumeter.billing.Account;
import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.ConflictException;
import io.gpumeter.billing.NotFoundException;
import io.gpumeter.billing.Plan;
import io.gpumeter.billing.Subscription;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import javax.sql.DataSource;

/**
 * Plans and subscriptions. A plan includes device nanoseconds per UTC month (one pool over all
 * device classes); a charge uses the allowance of its usage month first (V7 {@code deduct_charge}).
 */
public final class Plans {
  private final DataSource dataSource;
  private final Accounts accounts;

  public Plans(DataSource dataSource) {
    this.dataSource = dataSource;
    this.accounts = new Accounts(dataSource);
  }

  /**
   * Creates a plan.
   *
   * @throws IllegalArgumentException for a bad name, a negative allowance or a taken name
   */
  public Plan create(String name, long includedNs) {
    if (name == null || name.isBlank() || name.length() > 200) {
      throw new IllegalArgumentException("plan name must be 1-200 characters, was '" + name + "'");
    }
    if (includedNs < 0) {
      throw new IllegalArgumentException("included device time must be >= 0 ns, was " + includedNs);
    }
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "INSERT INTO plans (name, included_ns) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
                    + " RETURNING id")) {
      ps.setString(1, name);
      ps.setLong(2, includedNs);
      try (ResultSet rs = ps.executeQuery()) {
        if (!rs.next()) {
          throw new ConflictException("a plan named '" + name + "' exists already");
        }
        return new Plan(rs.getLong(1), name, includedNs);
      }
    } catch (SQLException e) {
      throw new BillingException("could not create plan '" + name + "'", e);
    }
  }

  /** Every plan, by id. */
  public List<Plan> list() {
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT id, name, included_ns FROM plans ORDER BY id");
        ResultSet rs = ps.executeQuery()) {
      List<Plan> out = new ArrayList<>();
      while (rs.next()) {
        out.add(new Plan(rs.getLong(1), rs.getString(2), rs.getLong(3)));
      }
      return out;
    } catch (SQLException e) {
      throw new BillingException("could not list plans", e);
    }
  }

  /**
   * Puts {@code account} on {@code plan} from {@code from}, open-ended; a subscription of the
   * account that is open at {@code from} is ended there.
   *
   * @throws IllegalArgumentException for a missing account or plan, or an overlap with a later
   *     subscription (nothing changes)
   */
  public Subscription assign(String account, String plan, Instant from) {
    Account a = accounts.require(account);
    if (from == null) {
      throw new IllegalArgumentException("a subscription needs a start");
    }
    try (Connection c = dataSource.getConnection()) {
      c.setAutoCommit(false);
      try {
        long planId;
        try (PreparedStatement ps = c.prepareStatement("SELECT id FROM plans WHERE name = ?")) {
          ps.setString(1, plan);
          try (ResultSet rs = ps.executeQuery()) {
            if (!rs.next()) {
              throw new NotFoundException("plan", "no plan named '" + plan + "'");
            }
            planId = rs.getLong(1);
          }
        }
        Timestamp f = Timestamp.from(from);
        try (PreparedStatement end =
            c.prepareStatement(
                "UPDATE subscriptions SET active = tstzrange(lower(active), ?, '[)')"
                    + " WHERE account_id = ? AND upper_inf(active) AND lower(active) < ?")) {
          end.setTimestamp(1, f);
          end.setLong(2, a.id());
          end.setTimestamp(3, f);
          end.executeUpdate();
        }
        Subscription s;
        try (PreparedStatement ins =
            c.prepareStatement(
                "INSERT INTO subscriptions (account_id, plan_id, active)"
                    + " VALUES (?, ?, tstzrange(?, NULL, '[)')) RETURNING id")) {
          ins.setLong(1, a.id());
          ins.setLong(2, planId);
          ins.setTimestamp(3, f);
          try (ResultSet rs = ins.executeQuery()) {
            rs.next();
            s = new Subscription(rs.getLong(1), a.id(), planId, from, null);
          }
        }
        c.commit();
        return s;
      } catch (SQLException | RuntimeException e) {
        c.rollback();
        if (e instanceof SQLException se && "23P01".equals(se.getSQLState())) {
          throw new ConflictException(
              "account '" + account + "' already has a subscription from " + from + " on", e);
        }
        throw e;
      }
    } catch (SQLException e) {
      throw new BillingException("could not assign plan '" + plan + "' to '" + account + "'", e);
    }
  }

  /**
   * The plan {@code account} is on at {@code at}, if any (the same subscription {@code
   * Credits.balance} takes the allowance from).
   *
   * @throws IllegalArgumentException for an unknown account
   */
  public Optional<Plan> current(String account, Instant at) {
    Account a = accounts.require(account);
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT p.id, p.name, p.included_ns FROM subscriptions s JOIN plans p"
                    + " ON p.id = s.plan_id WHERE s.account_id = ? AND s.active @> ?::timestamptz")) {
      ps.setLong(1, a.id());
      ps.setTimestamp(2, Timestamp.from(at));
      try (ResultSet rs = ps.executeQuery()) {
        return rs.next()
            ? Optional.of(new Plan(rs.getLong(1), rs.getString(2), rs.getLong(3)))
            : Optional.empty();
      }
    } catch (SQLException e) {
      throw new BillingException("could not read the plan of '" + account + "'", e);
    }
  }
}
