package io.gpumeter.billing.pricing;

import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.ChargeCost;
import io.gpumeter.billing.ConflictException;
import io.gpumeter.billing.PriceVersion;
import java.math.BigInteger;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.regex.Pattern;
import javax.sql.DataSource;

/**
 * The price book: effective-dated price versions per (model or {@code *}, device class, currency).
 *
 * <p>PostgreSQL holds the rules: versions of one key never overlap (an exclusion constraint on
 * their {@code tstzrange}), a charge is priced once at its {@code finished_at} in the transaction
 * that stores it (trigger {@code price_and_deduct_charges} of V7; a model's own version wins over
 * {@code *}), and the device class comes from the one SQL function {@code device_class(device,
 * device_name)}.
 */
public final class PriceBook {
  private static final Pattern DEVICE_CLASS = Pattern.compile("[a-z0-9]+(-[a-z0-9]+)*");
  private final DataSource dataSource;

  public PriceBook(DataSource dataSource) {
    this.dataSource = dataSource;
  }

  /**
   * Adds a price version valid on {@code [from, to)} ({@code to} null: open-ended). An open-ended
   * version of the same key that started before {@code from} and has priced nothing at or after
   * {@code from} is closed at {@code from} (that is how a new price takes over); any other overlap
   * is refused.
   *
   * @throws IllegalArgumentException for a negative price, an unknown currency, a malformed model
   *     or device class, {@code from >= to}, or an overlap with an existing version (nothing
   *     changes)
   * @throws BillingException if the database fails
   */
  public PriceVersion set(
      String model,
      String deviceClass,
      String currency,
      long priceMicrosPerSecond,
      Instant from,
      Instant to) {
    if (model == null || model.isEmpty() || model.length() > 200) {
      throw new IllegalArgumentException(
          "model must be 1-200 characters or '*', was '" + model + "'");
    }
    if (deviceClass == null || !DEVICE_CLASS.matcher(deviceClass).matches()) {
      throw new IllegalArgumentException(
          "device class must be lower-case words joined by '-' (e.g. cpu, nvidia-h100-80gb), was '"
              + deviceClass
              + "'");
    }
    Currencies.require(currency);
    if (priceMicrosPerSecond < 0) {
      throw new IllegalArgumentException(
          "price must be >= 0 micro-units per device-second, was " + priceMicrosPerSecond);
    }
    if (from == null) {
      throw new IllegalArgumentException("a price version needs a start (from)");
    }
    if (to != null && !to.isAfter(from)) {
      throw new IllegalArgumentException(
          "price version must end after it starts: " + from + " .. " + to);
    }
    try (Connection c = dataSource.getConnection()) {
      // the stored charges priced first (V25), so "already priced a charge" below sees them all
      Settlement.settle(c);
      c.setAutoCommit(false);
      try {
        try (PreparedStatement close =
            c.prepareStatement(
                "UPDATE price_versions v SET effective = tstzrange(lower(v.effective), ?, '[)')"
                    + " WHERE v.model = ? AND v.device_class = ? AND v.currency = ?"
                    + " AND upper_inf(v.effective) AND lower(v.effective) < ?"
                    + " AND NOT EXISTS (SELECT 1 FROM charge_prices p"
                    + " WHERE p.price_version_id = v.id AND p.finished_at >= ?)")) {
          Timestamp f = Timestamp.from(from);
          close.setTimestamp(1, f);
          close.setString(2, model);
          close.setString(3, deviceClass);
          close.setString(4, currency);
          close.setTimestamp(5, f);
          close.setTimestamp(6, f);
          close.executeUpdate();
        }
        PriceVersion v;
        try (PreparedStatement ins =
            c.prepareStatement(
                "INSERT INTO price_versions (model, device_class, currency, price_micros_per_s,"
                    + " effective) VALUES (?, ?, ?, ?, tstzrange(?, ?, '[)')) RETURNING id")) {
          ins.setString(1, model);
          ins.setString(2, deviceClass);
          ins.setString(3, currency);
          ins.setLong(4, priceMicrosPerSecond);
          ins.setTimestamp(5, Timestamp.from(from));
          ins.setTimestamp(6, to == null ? null : Timestamp.from(to));
          try (ResultSet rs = ins.executeQuery()) {
            rs.next();
            v =
                new PriceVersion(
                    rs.getLong(1), model, deviceClass, currency, priceMicrosPerSecond, from, to);
          }
        }
        c.commit();
        return v;
      } catch (SQLException e) {
        c.rollback();
        if ("23P01".equals(e.getSQLState())) {
          throw new ConflictException(
              "price version for model '"
                  + model
                  + "' on '"
                  + deviceClass
                  + "' in "
                  + currency
                  + " from "
                  + from
                  + (to == null ? "" : " to " + to)
                  + " overlaps an existing version",
              e);
        }
        throw e;
      }
    } catch (SQLException e) {
      throw new BillingException("could not store a price version", e);
    }
  }

  /**
   * Every price version, by model, device class, currency and start.
   *
   * @throws BillingException if the database fails
   */
  public List<PriceVersion> list() {
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT id, model, device_class, currency, price_micros_per_s, lower(effective),"
                    + " upper(effective) FROM price_versions"
                    + " ORDER BY model, device_class, currency, lower(effective)");
        ResultSet rs = ps.executeQuery()) {
      List<PriceVersion> out = new ArrayList<>();
      while (rs.next()) {
        Timestamp to = rs.getTimestamp(7);
        out.add(
            new PriceVersion(
                rs.getLong(1),
                rs.getString(2),
                rs.getString(3),
                rs.getString(4),
                rs.getLong(5),
                rs.getTimestamp(6).toInstant(),
                to == null ? null : to.toInstant()));
      }
      return out;
    } catch (SQLException e) {
      throw new BillingException("could not list price versions", e);
    }
  }

  /**
   * The priced cost of a stored charge, or empty while it is not stored or when no price version
   * covered it.
   *
   * @throws BillingException if the database fails
   */
  public Optional<ChargeCost> chargeCost(String requestId) {
    try (Connection c = dataSource.getConnection()) {
      Settlement.settle(c); // a stored charge is priced by the settler (V25)
      return chargeCost(c, requestId);
    } catch (SQLException e) {
      throw new BillingException("could not read the cost of request " + requestId, e);
    }
  }

  private static Optional<ChargeCost> chargeCost(Connection c, String requestId)
      throws SQLException {
    try (PreparedStatement ps =
        c.prepareStatement(
            "SELECT p.device_ns, p.cost_nmicros, a.currency, p.price_version_id,"
                + " p.price_micros_per_s FROM charge_prices p JOIN accounts a"
                + " ON a.id = p.account_id WHERE p.request_id = ?")) {
      ps.setString(1, requestId);
      try (ResultSet rs = ps.executeQuery()) {
        if (!rs.next()) {
          return Optional.empty();
        }
        BigInteger exact = rs.getBigDecimal(2).toBigIntegerExact();
        return Optional.of(
            new ChargeCost(
                requestId,
                rs.getLong(1),
                exact,
                Money.roundToMicros(exact),
                rs.getString(3),
                rs.getLong(4),
                rs.getLong(5)));
      }
    }
  }
}
