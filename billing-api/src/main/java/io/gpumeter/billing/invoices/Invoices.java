package io.gpumeter.billing.invoices;

import io.gpumeter.billing.Account;
import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.ConflictException;
import io.gpumeter.billing.Invoice;
import io.gpumeter.billing.InvoiceLine;
import io.gpumeter.billing.InvoiceVerification;
import io.gpumeter.billing.plans.Accounts;
import io.gpumeter.billing.pricing.Settlement;
import java.math.BigInteger;
import java.sql.Connection;
import java.sql.Date;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.time.Clock;
import java.time.Instant;
import java.time.LocalDate;
import java.time.YearMonth;
import java.time.ZoneOffset;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import javax.sql.DataSource;

/**
 * Invoices: one per account per UTC calendar month, from the ledger.
 *
 * <p>A charge is on the invoice of its usage month unless that month was finalized before the
 * charge reached the ledger; then it is on the first month after the account's latest finalized
 * invoice, as a line with {@code lateFrom} (V7 {@code invoice_period_for}, decided under the
 * account's advisory lock that {@link #finalize} also takes). A void is on the invoice open when it
 * is applied, negated. A finalized invoice is stored and never changes (its tables refuse UPDATE
 * and DELETE); a draft is computed from the ledger on each call.
 */
public final class Invoices {
  private static final String LEDGER_ROWS =
      "SELECT p.model, p.device_class, p.price_version_id,"
          // the plan's overage price where it priced the charge (V20), else the price book's
          + " coalesce(d.unit_price_micros_per_s, p.price_micros_per_s), d.usage_period,"
          + " d.invoice_period, d.kind, d.included_ns, d.billable_ns, d.credit_nmicros,"
          // the pool used in ppm-ns (V20; included_ns x 10^6 on rows written before it)
          + " coalesce(d.pool_used, d.included_ns::numeric * 1000000)"
          + " FROM charge_deductions d JOIN charge_prices p ON p.request_id = d.request_id"
          + " WHERE d.account_id = ? AND d.invoice_period = ?";

  private static final String RAW_ROWS =
      "SELECT d.request_id, u.model, dc.cls, pv.id, pv.price_micros_per_s, d.usage_period,"
          + " d.invoice_period, d.kind, d.included_ns, d.billable_ns, d.credit_nmicros,"
          + " d.postpaid_nmicros, d.overspend_nmicros, u.device_ns,"
          + " date_trunc('month', u.finished_at, 'UTC')::date, pl.overage, pl.weight,"
          + " coalesce(d.pool_used, d.included_ns::numeric * 1000000)"
          + " FROM charge_deductions d JOIN usage_records u ON u.request_id = d.request_id"
          + " JOIN accounts a ON a.id = u.account_id"
          + " CROSS JOIN LATERAL (SELECT device_class(u.device, u.device_name) AS cls) dc"
          + " LEFT JOIN LATERAL (SELECT v.id, v.price_micros_per_s FROM price_versions v"
          + " WHERE v.currency = a.currency AND v.device_class = dc.cls"
          + " AND v.model IN (u.model, '*') AND v.effective @> u.finished_at"
          + " ORDER BY v.model = '*' LIMIT 1) pv ON true"
          // the plan the account was on when the charge finished: its overage price and the
          // weight of the charge's class in its pool (V20)
          + " LEFT JOIN LATERAL (SELECT p.overage_price_micros_per_s AS overage,"
          + " coalesce(w.weight_ppm, 1000000) AS weight FROM subscriptions s"
          + " JOIN plans p ON p.id = s.plan_id LEFT JOIN plan_class_weights w"
          + " ON w.plan_id = p.id AND w.device_class = dc.cls"
          + " WHERE s.account_id = u.account_id AND s.active @> u.finished_at) pl ON true"
          + " WHERE d.account_id = ? AND d.invoice_period = ?";

  private final DataSource dataSource;
  private final Accounts accounts;
  private final Clock clock;

  public Invoices(DataSource dataSource, Clock clock) {
    this.dataSource = dataSource;
    this.accounts = new Accounts(dataSource);
    this.clock = clock;
  }

  /**
   * The invoice of {@code account} for {@code month}: the stored one when finalized, else a draft.
   *
   * @throws IllegalArgumentException for an unknown account
   */
  public Invoice show(String account, YearMonth month) {
    Account a = accounts.require(account);
    settle();
    try (Connection c = dataSource.getConnection()) {
      Invoice stored = stored(c, a, month);
      return stored != null ? stored : draft(c, a, month);
    } catch (SQLException e) {
      throw new BillingException("could not read the invoice of '" + account + "' for " + month, e);
    }
  }

  /** Every month of {@code account} with an invoice or charges, oldest first. */
  public List<Invoice> list(String account) {
    Account a = accounts.require(account);
    settle();
    TreeSet<YearMonth> months = new TreeSet<>();
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT DISTINCT invoice_period FROM charge_deductions WHERE account_id = ?"
                    + " UNION SELECT period FROM invoices WHERE account_id = ?")) {
      ps.setLong(1, a.id());
      ps.setLong(2, a.id());
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          months.add(YearMonth.from(rs.getDate(1).toLocalDate()));
        }
      }
      List<Invoice> out = new ArrayList<>();
      for (YearMonth m : months) {
        Invoice stored = stored(c, a, m);
        out.add(stored != null ? stored : draft(c, a, m));
      }
      return out;
    } catch (SQLException e) {
      throw new BillingException("could not list the invoices of '" + account + "'", e);
    }
  }

  /**
   * Freezes the invoice of {@code account} for {@code month}: its lines are stored and never
   * change; charges that reach the ledger later go on the next invoice as late usage.
   *
   * @throws IllegalArgumentException for an unknown account, a month that has not ended, a month
   *     already finalized, or an earlier month with charges still open (finalize that first)
   */
  public Invoice finalize(String account, YearMonth month) {
    Account a = accounts.require(account);
    // PostgreSQL keeps microseconds: the returned invoice equals the stored one.
    Instant now = clock.instant().truncatedTo(ChronoUnit.MICROS);
    if (!YearMonth.from(now.atZone(ZoneOffset.UTC)).isAfter(month)) {
      throw new IllegalArgumentException(month + " has not ended yet (now " + now + ")");
    }
    try (Connection c = dataSource.getConnection()) {
      c.setAutoCommit(false);
      try {
        // every charge stored so far on this month's invoice (a later one goes late)
        Settlement.settle(c);
        try (PreparedStatement lock =
            c.prepareStatement("SELECT pg_advisory_xact_lock(hashtext('account:' || ?))")) {
          lock.setLong(1, a.id());
          lock.executeQuery().close();
        }
        if (stored(c, a, month) != null) {
          throw new ConflictException(
              "the invoice of '" + account + "' for " + month + " is final already");
        }
        try (PreparedStatement open =
            c.prepareStatement(
                "SELECT min(invoice_period) FROM charge_deductions WHERE account_id = ?"
                    + " AND invoice_period < ? AND invoice_period > coalesce((SELECT max(period)"
                    + " FROM invoices WHERE account_id = ?), '-infinity'::date)")) {
          open.setLong(1, a.id());
          open.setDate(2, date(month));
          open.setLong(3, a.id());
          try (ResultSet rs = open.executeQuery()) {
            rs.next();
            Date earlier = rs.getDate(1);
            if (earlier != null) {
              throw new ConflictException(
                  "finalize "
                      + YearMonth.from(earlier.toLocalDate())
                      + " of '"
                      + account
                      + "' first");
            }
          }
        }
        Invoice draft = draft(c, a, month);
        try (PreparedStatement ins =
            c.prepareStatement(
                "INSERT INTO invoices (account_id, period, currency, total_micros, finalized_at)"
                    + " VALUES (?, ?, ?, ?, ?)")) {
          ins.setLong(1, a.id());
          ins.setDate(2, date(month));
          ins.setString(3, a.currency());
          ins.setLong(4, draft.totalMicros());
          ins.setTimestamp(5, Timestamp.from(now));
          ins.executeUpdate();
        }
        try (PreparedStatement ins =
            c.prepareStatement(
                "INSERT INTO invoice_lines (account_id, period, line_no, model, device_class,"
                    + " price_version_id, unit_price_micros_per_s, late_from, requests, device_ns,"
                    + " included_ns, billable_ns, amount_micros, credits_micros, due_micros,"
                    + " pool_used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")) {
          int no = 0;
          for (InvoiceLine l : draft.lines()) {
            ins.setLong(1, a.id());
            ins.setDate(2, date(month));
            ins.setInt(3, ++no);
            ins.setString(4, l.model());
            ins.setString(5, l.deviceClass());
            ins.setLong(6, l.priceVersionId());
            ins.setLong(7, l.unitPriceMicrosPerSecond());
            ins.setDate(8, l.lateFrom() == null ? null : date(l.lateFrom()));
            ins.setLong(9, l.requests());
            ins.setLong(10, l.deviceNs());
            ins.setLong(11, l.includedNs());
            ins.setLong(12, l.billableNs());
            ins.setLong(13, l.amountMicros());
            ins.setLong(14, l.creditsMicros());
            ins.setLong(15, l.dueMicros());
            ins.setBigDecimal(16, new java.math.BigDecimal(l.poolUsedPpmNs()));
            ins.addBatch();
          }
          ins.executeBatch();
        }
        c.commit();
        return new Invoice(
            a.id(), a.name(), month, a.currency(), draft.lines(), draft.totalMicros(), now);
      } catch (SQLException | RuntimeException e) {
        c.rollback();
        throw e;
      }
    } catch (SQLException e) {
      throw new BillingException("could not finalize the invoice of '" + account + "'", e);
    }
  }

  /**
   * Recomputes the invoice of {@code account} for {@code month} from the raw usage records and the
   * price versions (device class and price looked up again, device time from the record, each
   * deduction checked against the record's cost) and compares it with the stated invoice (stored
   * when final, else the draft from the ledger) line by line, to the micro-unit. Also reports
   * priced records of the month that were never deducted.
   */
  public InvoiceVerification verify(String account, YearMonth month) {
    Account a = accounts.require(account);
    settle();
    try (Connection c = dataSource.getConnection()) {
      Invoice stored = stored(c, a, month);
      Invoice stated = stored != null ? stored : draft(c, a, month);
      List<String> problems = new ArrayList<>();
      LineTotals totals = new LineTotals();
      try (PreparedStatement ps = c.prepareStatement(RAW_ROWS)) {
        ps.setLong(1, a.id());
        ps.setDate(2, date(month));
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            String rid = rs.getString(1);
            long pvId = rs.getLong(4);
            if (rs.wasNull()) {
              problems.add("request " + rid + ": no price version covers it");
              continue;
            }
            long bookPrice = rs.getLong(5);
            long overage = rs.getLong(16);
            long price = rs.wasNull() ? bookPrice : overage;
            long weight = rs.getObject(17) == null ? 1_000_000L : rs.getLong(17);
            BigInteger poolUsed = rs.getBigDecimal(18).toBigIntegerExact();
            LocalDate usage = rs.getDate(6).toLocalDate();
            LocalDate invoiced = rs.getDate(7).toLocalDate();
            int sign = "void".equals(rs.getString(8)) ? -1 : 1;
            long included = rs.getLong(9);
            long billable = rs.getLong(10);
            BigInteger credit = rs.getBigDecimal(11).toBigIntegerExact();
            BigInteger postpaid = rs.getBigDecimal(12).toBigIntegerExact();
            BigInteger overspend = rs.getBigDecimal(13).toBigIntegerExact();
            long rawNs = sign * rs.getLong(14);
            LocalDate finishedMonth = rs.getDate(15).toLocalDate();
            if (included + billable != rawNs) {
              problems.add(
                  "request "
                      + rid
                      + ": included "
                      + included
                      + " + billable "
                      + billable
                      + " ns is not its device time "
                      + rawNs);
            }
            BigInteger w = BigInteger.valueOf(weight);
            if (poolUsed.signum() * sign < 0
                || poolUsed.abs().compareTo(BigInteger.valueOf(Math.abs(rawNs)).multiply(w)) > 0
                || !poolUsed.divide(w).equals(BigInteger.valueOf(included))) {
              problems.add(
                  "request "
                      + rid
                      + ": included "
                      + included
                      + " ns is not its pool use "
                      + poolUsed
                      + " ppm-ns at weight "
                      + weight
                      + " ppm");
            }
            BigInteger cost = BigInteger.valueOf(billable).multiply(BigInteger.valueOf(price));
            if (!credit.add(postpaid).add(overspend).equals(cost)) {
              problems.add("request " + rid + ": paid parts do not add up to its cost " + cost);
            }
            if (!usage.equals(finishedMonth)) {
              problems.add(
                  "request " + rid + ": usage month " + usage + " is not " + finishedMonth);
            }
            totals.add(
                new LineTotals.Charge(
                    rs.getString(2),
                    rs.getString(3),
                    pvId,
                    price,
                    usage.equals(invoiced) ? null : YearMonth.from(usage),
                    sign,
                    rawNs,
                    included,
                    billable,
                    credit,
                    poolUsed));
          }
        }
      }
      List<InvoiceLine> lines = totals.lines();
      // A line finalized before V24 did not record its pool use: compare the rest of it.
      for (int i = 0; i < Math.min(lines.size(), stated.lines().size()); i++) {
        if (stated.lines().get(i).poolUsedPpmNs() == null) {
          lines.set(i, lines.get(i).withoutPool());
        }
      }
      Invoice recomputed =
          new Invoice(
              a.id(),
              a.name(),
              month,
              a.currency(),
              lines,
              LineTotals.total(lines),
              stated.finalizedAt());
      if (!lines.equals(stated.lines())) {
        for (int i = 0; i < Math.max(lines.size(), stated.lines().size()); i++) {
          InvoiceLine s = i < stated.lines().size() ? stated.lines().get(i) : null;
          InvoiceLine r = i < lines.size() ? lines.get(i) : null;
          if (s == null || !s.equals(r)) {
            problems.add("line " + (i + 1) + ": stated " + s + " but recomputed " + r);
          }
        }
      }
      if (recomputed.totalMicros() != stated.totalMicros()) {
        problems.add(
            "total: stated "
                + stated.totalMicros()
                + " but recomputed "
                + recomputed.totalMicros());
      }
      long unpriced;
      try (PreparedStatement ps =
          c.prepareStatement(
              "SELECT u.request_id, (p.request_id IS NULL) FROM usage_records u"
                  + " LEFT JOIN charge_prices p ON p.request_id = u.request_id"
                  + " WHERE u.account_id = ? AND u.finished_at >= ? AND u.finished_at < ?"
                  + " AND NOT EXISTS (SELECT 1 FROM charge_voids v WHERE v.request_id = u.request_id)"
                  + " AND NOT EXISTS (SELECT 1 FROM charge_deductions d"
                  + " WHERE d.request_id = u.request_id AND d.kind = 'charge')")) {
        ps.setLong(1, a.id());
        ps.setTimestamp(2, Timestamp.from(month.atDay(1).atStartOfDay(ZoneOffset.UTC).toInstant()));
        ps.setTimestamp(
            3,
            Timestamp.from(month.plusMonths(1).atDay(1).atStartOfDay(ZoneOffset.UTC).toInstant()));
        unpriced = 0;
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            if (rs.getBoolean(2)) {
              unpriced++;
            } else {
              problems.add("request " + rs.getString(1) + ": priced but never deducted");
            }
          }
        }
      }
      return new InvoiceVerification(stated, recomputed, problems, unpriced);
    } catch (SQLException e) {
      throw new BillingException("could not verify the invoice of '" + account + "'", e);
    }
  }

  private static Invoice draft(Connection c, Account a, YearMonth month) throws SQLException {
    LineTotals totals = new LineTotals();
    try (PreparedStatement ps = c.prepareStatement(LEDGER_ROWS)) {
      ps.setLong(1, a.id());
      ps.setDate(2, date(month));
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          LocalDate usage = rs.getDate(5).toLocalDate();
          LocalDate invoiced = rs.getDate(6).toLocalDate();
          int sign = "void".equals(rs.getString(7)) ? -1 : 1;
          long included = rs.getLong(8);
          long billable = rs.getLong(9);
          totals.add(
              new LineTotals.Charge(
                  rs.getString(1),
                  rs.getString(2),
                  rs.getLong(3),
                  rs.getLong(4),
                  usage.equals(invoiced) ? null : YearMonth.from(usage),
                  sign,
                  included + billable,
                  included,
                  billable,
                  rs.getBigDecimal(10).toBigIntegerExact(),
                  rs.getBigDecimal(11).toBigIntegerExact()));
        }
      }
    }
    List<InvoiceLine> lines = totals.lines();
    return new Invoice(a.id(), a.name(), month, a.currency(), lines, LineTotals.total(lines), null);
  }

  private static Invoice stored(Connection c, Account a, YearMonth month) throws SQLException {
    Instant finalizedAt;
    long total;
    String currency;
    try (PreparedStatement ps =
        c.prepareStatement(
            "SELECT finalized_at, total_micros, currency FROM invoices"
                + " WHERE account_id = ? AND period = ?")) {
      ps.setLong(1, a.id());
      ps.setDate(2, date(month));
      try (ResultSet rs = ps.executeQuery()) {
        if (!rs.next()) {
          return null;
        }
        finalizedAt = rs.getTimestamp(1).toInstant();
        total = rs.getLong(2);
        currency = rs.getString(3);
      }
    }
    List<InvoiceLine> lines = new ArrayList<>();
    try (PreparedStatement ps =
        c.prepareStatement(
            "SELECT model, device_class, price_version_id, unit_price_micros_per_s, late_from,"
                + " requests, device_ns, included_ns, billable_ns, amount_micros, credits_micros,"
                + " due_micros, pool_used FROM invoice_lines WHERE account_id = ? AND period = ?"
                + " ORDER BY line_no")) {
      ps.setLong(1, a.id());
      ps.setDate(2, date(month));
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          Date late = rs.getDate(5);
          lines.add(
              new InvoiceLine(
                  rs.getString(1),
                  rs.getString(2),
                  rs.getLong(3),
                  rs.getLong(4),
                  late == null ? null : YearMonth.from(late.toLocalDate()),
                  rs.getLong(6),
                  rs.getLong(7),
                  rs.getLong(8),
                  rs.getLong(9),
                  rs.getLong(10),
                  rs.getLong(11),
                  rs.getLong(12),
                  rs.getBigDecimal(13) == null ? null : rs.getBigDecimal(13).toBigIntegerExact()));
        }
      }
    }
    return new Invoice(a.id(), a.name(), month, currency, lines, total, finalizedAt);
  }

  private static Date date(YearMonth m) {
    return Date.valueOf(m.atDay(1));
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
