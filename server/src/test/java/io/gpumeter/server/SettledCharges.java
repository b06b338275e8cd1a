package io.gpumeter.server;

import java.sql.Connection;
import java.sql.SQLException;
import java.sql.Statement;
import javax.sql.DataSource;

/**
 * Tests that read the money tables with SQL settle first: since V25 the ledger's insert stores only
 * the record, and {@code settle_charges()} prices and deducts it (as every money read of the server
 * does before it reads).
 */
public final class SettledCharges {
  private SettledCharges() {}

  /** Prices and deducts every charge stored so far. */
  public static void settle(DataSource dataSource) throws SQLException {
    try (Connection c = dataSource.getConnection();
        Statement st = c.createStatement()) {
      st.execute("SELECT settle_charges()");
    }
  }
}
