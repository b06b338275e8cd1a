package io.gpumeter.billing.reconcile;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.BillingConfig;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import javax.sql.DataSource;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * DESIGN.md invariant 7, threads table: measured time is written on its own (the {@code
 * gpumeter-measured-flush} thread) at least every {@code reconciliationFlushInterval} when no
 * ledger batch carries it. Nothing else here writes it: no usage record is published, no report is
 * asked for, and billing stays open until the row is seen.
 */
class MeasuredFlushTest {
  @TempDir Path tmp;

  @Test
  @Timeout(120)
  void measuredTimeWithNoBatchToCarryItIsWrittenByTheFlusher() throws Exception {
    try (Database db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
        Billing billing =
            Billing.open(
                db,
                BillingConfig.defaults()
                    .withRetention(null)
                    .withReconciliationFlushInterval(Duration.ofSeconds(1)))) {
      assertThat(measured(db.dataSource(), "flush-model")).isZero();
      billing.measuredTime().record("flush-model", "cpu", 5_000, 0, 5_000, 1);
      // Written within about a second; the bound tolerates a loaded machine.
      await()
          .atMost(15, TimeUnit.SECONDS)
          .until(() -> measured(db.dataSource(), "flush-model") == 5_000);
      billing.measuredTime().record("flush-model", "cpu", 7, 0, 7, 1);
      await()
          .atMost(15, TimeUnit.SECONDS)
          .until(() -> measured(db.dataSource(), "flush-model") == 5_007);
    }
  }

  static long measured(DataSource ds, String model) throws Exception {
    try (Connection c = ds.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT coalesce(sum(measured_ns), 0) FROM device_time_minutely WHERE model = ?")) {
      ps.setString(1, model);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }
}
