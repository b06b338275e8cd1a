package io.gpumeter.billing.pricing;

import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import javax.sql.DataSource;

/**
 * Prices and deducts the charges stored since the last settlement (V25's {@code settle_charges()},
 * docs/DESIGN.md "Money", "Settlement off the write path"): the ledger's insert stores only the
 * record; this runs V20's set-based pricing, cost rollup and deduction over every record stored
 * since the watermark in one statement. Run by the settler thread every second and by every money
 * read before it reads, so nothing a user sees lags the stored records.
 *
 * <p>Lock order: the settlement's own lock (held to the caller's commit), then accounts ascending.
 * Call it before taking an account's advisory lock in the same transaction, never after.
 */
public final class Settlement {
  private Settlement() {}

  /**
   * Settles on {@code c}, in its transaction (with auto-commit on, in its own): the charges
   * deducted.
   */
  public static long settle(Connection c) throws SQLException {
    try (Statement st = c.createStatement();
        ResultSet rs = st.executeQuery("SELECT settle_charges()")) {
      rs.next();
      return rs.getLong(1);
    }
  }

  /** Settles in a transaction of its own on a connection of {@code dataSource}. */
  public static long settle(DataSource dataSource) throws SQLException {
    try (Connection c = dataSource.getConnection()) {
      if (!c.getAutoCommit()) {
        c.setAutoCommit(true);
      }
      return settle(c);
    }
  }
}
