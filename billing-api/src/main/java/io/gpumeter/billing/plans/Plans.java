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
import java.sql.Types;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.regex.Pattern;
import javax.sql.DataSource;

/**
 * Plans and subscriptions. A plan includes device nanoseconds per UTC month (one pool over all
 * device classes, each at its weight, V20); a charge uses the allowance of its usage month first
 * (V20 {@code deduct_charge} and {@code price_and_deduct_charges}).
 */
public final class Plans {
  private final DataSource dataSource;
  private final Accounts accounts;

  public Plans(DataSource dataSource) {
    this.dataSource = dataSource;
    this.accounts = new Accounts(dataSource);
  }

  /**
   * Creates an unweighted plan priced by the price book.
   *
   * @throws IllegalArgumentException for a bad name, a negative allowance or a taken name
   */
  public Plan create(String name, long includedNs) {
    return create(name, includedNs, null, Map.of());
  }

  /**
   * Creates a plan with an optional overage price (micro-units per device-second, for the part of a
   * charge beyond the allowance; null: the price book) and class weights in parts per million (a
   * class not listed weighs {@link Plan#UNIT_WEIGHT_PPM}; null or empty: none). Nothing is written
   * when it refuses.
   *
   * @throws IllegalArgumentException for a bad name, a negative allowance, a negative overage
   *     price, a weight outside 1..10^12 ppm, a class the price book has never priced, or a taken
   *     name ({@link ConflictException})
   */
  public Plan create(
      String name, long includedNs, Long overagePriceMicrosPerSecond, Map<String, Long> weights) {
    if (name == null || name.isBlank() || name.length() > 200) {
      throw new IllegalArgumentException("plan name must be 1-200 characters, was '" + name + "'");
    }
    if (includedNs < 0) {
      throw new IllegalArgumentException("included device time must be >= 0 ns, was " + includedNs);
    }
    if (overagePriceMicrosPerSecond != null && overagePriceMicrosPerSecond < 0) {
      throw new IllegalArgumentException(
          "overage price must be >= 0 micro-units per device-second, was "
              + overagePriceMicrosPerSecond);
    }
    Map<String, Long> w = new TreeMap<>();
    for (Map.Entry<String, Long> e :
        (weights == null ? Map.<String, Long>of() : weights).entrySet()) {
      String cls = e.getKey();
      Long ppm = e.getValue();
      if (cls == null || !CLASS.matcher(cls).matches()) {
        throw new IllegalArgumentException(
            "device class must look like 'nvidia-h200' or 'cpu', was '" + cls + "'");
      }
      if (ppm == null || ppm < 1 || ppm > MAX_WEIGHT_PPM) {
        throw new IllegalArgumentException(
            "weight of device class '"
                + cls
                + "' must be 1-"
                + MAX_WEIGHT_PPM
                + " parts per million, was "
                + ppm);
      }
      w.put(cls, ppm);
    }
    try (Connection c = dataSource.getConnection()) {
      c.setAutoCommit(false);
      try {
        for (String cls : w.keySet()) {
          try (PreparedStatement ps =
              c.prepareStatement("SELECT 1 FROM price_versions WHERE device_class = ? LIMIT 1")) {
            ps.setString(1, cls);
            try (ResultSet rs = ps.executeQuery()) {
              if (!rs.next()) {
                throw new IllegalArgumentException(
                    "unknown device class '"
                        + cls
                        + "': the price book has no price for it (set one with 'price set' first)");
              }
            }
          }
        }
        long id;
        try (PreparedStatement ps =
            c.prepareStatement(
                "INSERT INTO plans (name, included_ns, overage_price_micros_per_s) VALUES (?, ?, ?)"
                    + " ON CONFLICT (name) DO NOTHING RETURNING id")) {
          ps.setString(1, name);
          ps.setLong(2, includedNs);
          ps.setObject(3, overagePriceMicrosPerSecond, Types.BIGINT);
          try (ResultSet rs = ps.executeQuery()) {
            if (!rs.next()) {
              throw new ConflictException("a plan named '" + name + "' exists already");
            }
            id = rs.getLong(1);
          }
        }
        try (PreparedStatement ps =
            c.prepareStatement(
                "INSERT INTO plan_class_weights (plan_id, device_class, weight_ppm)"
                    + " VALUES (?, ?, ?)")) {
          for (Map.Entry<String, Long> e : w.entrySet()) {
            ps.setLong(1, id);
            ps.setString(2, e.getKey());
            ps.setLong(3, e.getValue());
            ps.addBatch();
          }
          ps.executeBatch();
        }
        c.commit();
        return new Plan(id, name, includedNs, overagePriceMicrosPerSecond, w);
      } catch (SQLException | RuntimeException e) {
        c.rollback();
        throw e;
      }
    } catch (SQLException e) {
      throw new BillingException("could not create plan '" + name + "'", e);
    }
  }

  private static final long MAX_WEIGHT_PPM = 1_000_000_000_000L;
  private static final Pattern CLASS = Pattern.compile("[a-z0-9]+(-[a-z0-9]+)*");
  private static final String COLUMNS =
      "p.id, p.name, p.included_ns, p.overage_price_micros_per_s, (SELECT coalesce(string_agg("
          + "w.device_class || '=' || w.weight_ppm, ',' ORDER BY w.device_class), '')"
          + " FROM plan_class_weights w WHERE w.plan_id = p.id)";

  private static Plan plan(ResultSet rs) throws SQLException {
    long over = rs.getLong(4);
    Long overage = rs.wasNull() ? null : over;
    Map<String, Long> w = new TreeMap<>();
    for (String kv : rs.getString(5).split(",")) {
      if (!kv.isEmpty()) {
        int eq = kv.indexOf('=');
        w.put(kv.substring(0, eq), Long.parseLong(kv.substring(eq + 1)));
      }
    }
    return new Plan(rs.getLong(1), rs.getString(2), rs.getLong(3), overage, w);
  }

  /** Every plan, by id. */
  public List<Plan> list() {
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT " + COLUMNS + " FROM plans p ORDER BY id");
        ResultSet rs = ps.executeQuery()) {
      List<Plan> out = new ArrayList<>();
      while (rs.next()) {
        out.add(plan(rs));
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
        try (PreparedStatement ps =
            c.prepareStatement(
                "SELECT id, overage_price_micros_per_s IS NOT NULL FROM plans WHERE name = ?")) {
          ps.setString(1, plan);
          try (ResultSet rs = ps.executeQuery()) {
            if (!rs.next()) {
              throw new NotFoundException("plan", "no plan named '" + plan + "'");
            }
            planId = rs.getLong(1);
            if (rs.getBoolean(2) && !a.postpaidAllowed()) {
              throw new IllegalArgumentException(
                  "plan '"
                      + plan
                      + "' has an overage price, which is billed postpaid, but account '"
                      + account
                      + "' does not allow postpaid overage");
            }
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
                "SELECT "
                    + COLUMNS
                    + " FROM subscriptions s JOIN plans p"
                    + " ON p.id = s.plan_id WHERE s.account_id = ? AND s.active @> ?::timestamptz")) {
      ps.setLong(1, a.id());
      ps.setTimestamp(2, Timestamp.from(at));
      try (ResultSet rs = ps.executeQuery()) {
        return rs.next() ? Optional.of(plan(rs)) : Optional.empty();
      }
    } catch (SQLException e) {
      throw new BillingException("could not read the plan of '" + account + "'", e);
    }
  }
}
