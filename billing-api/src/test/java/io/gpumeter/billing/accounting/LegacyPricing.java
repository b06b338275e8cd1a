package io.gpumeter.billing.accounting;

import java.sql.Connection;
import java.sql.SQLException;
import java.sql.Statement;

/**
 * Tests that compare the deduction of V7..V20 (a statement trigger in the ledger's insert) with
 * V25's settlement ({@code settle_charges()} after the insert) on one database: before an insert,
 * {@link #install} puts an old {@code price_and_deduct_charges()} back as the trigger V25 dropped
 * (or, for {@code null}, leaves V25's write path); after it, {@link #finish} settles (V25) or moves
 * the settlement watermark past the records the old trigger already priced, so a later settlement
 * never prices them twice.
 */
final class LegacyPricing {
  private LegacyPricing() {}

  /** {@code function}: an old definition of the function, or null for V25's settlement. */
  static void install(Connection c, String function) throws SQLException {
    try (Statement st = c.createStatement()) {
      st.execute("DROP TRIGGER IF EXISTS usage_records_price ON usage_records");
      if (function != null) {
        st.execute(function);
        st.execute(
            "CREATE TRIGGER usage_records_price AFTER INSERT ON usage_records"
                + " REFERENCING NEW TABLE AS new_rows"
                + " FOR EACH STATEMENT EXECUTE FUNCTION price_and_deduct_charges()");
      }
    }
  }

  static void finish(Connection c, String function) throws SQLException {
    try (Statement st = c.createStatement()) {
      if (function == null) {
        st.execute("SELECT settle_charges()");
      } else {
        st.execute("DROP TRIGGER usage_records_price ON usage_records");
        st.execute(
            "UPDATE charge_settlement SET settled_seq = (SELECT CASE WHEN is_called"
                + " THEN last_value ELSE 0 END FROM usage_settle_seq)");
      }
    }
  }
}
