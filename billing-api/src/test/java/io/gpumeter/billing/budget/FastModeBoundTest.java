package io.gpumeter.billing.budget;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.BillingConfig;
import io.gpumeter.billing.Budgets;
import io.gpumeter.billing.Budgets.Reservation;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.Durability;
import io.gpumeter.billing.InsufficientQuotaException;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.ledger.JdbcLedgerStore;
import io.gpumeter.billing.ledger.LedgerStore;
import io.gpumeter.billing.ledger.LedgerWriteException;
import io.gpumeter.billing.ledger.LedgerWriter;
import io.gpumeter.metering.UsageRecord;
import java.math.BigDecimal;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * FAST mode's extra term of the overspend bound (DESIGN.md invariant 22), made to happen on
 * purpose: a charge settled when queued but not yet committed when the lease is renewed is
 * forgotten by the renewal, so the replica admits it again; the overspend is then at most that
 * charge's cost. The ledger's commits are held back by a gate in front of the real JDBC store,
 * renewals are run by hand and the local clock is the test's; the database is the real embedded
 * PostgreSQL.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class FastModeBoundTest {
  static final Instant JAN_1 = Instant.parse("2026-01-01T00:00:00Z");

  /** 1 USD per device-second: 10^6 nano-micro-units per device-ns. */
  static final long PRICE = 1_000_000;

  static final long MS = 1_000_000;

  @TempDir static Path tmp;
  static Database db;
  static Billing billing;
  static Accounting money;

  final AtomicLong clock = new AtomicLong(1_000_000_000_000L);

  @BeforeAll
  static void start() {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
    billing = Billing.open(db, BillingConfig.defaults());
    money = billing.accounting();
    money.setPrice("priced", "cpu", "USD", PRICE, JAN_1, null);
  }

  @AfterAll
  static void stop() {
    billing.close();
    db.close();
  }

  /** The real store, behind a gate that holds every write until opened. */
  static final class GatedStore implements LedgerStore {
    final LedgerStore inner;
    final CountDownLatch open = new CountDownLatch(1);

    GatedStore(LedgerStore inner) {
      this.inner = inner;
    }

    @Override
    public int write(List<UsageRecord> records) throws LedgerWriteException {
      try {
        if (!open.await(2, TimeUnit.MINUTES)) {
          throw new IllegalStateException("the test never opened the gate");
        }
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new IllegalStateException(e);
      }
      return inner.write(records);
    }
  }

  @Test
  void aChargeQueuedButUncommittedAtARenewalIsAdmittedTwiceAndOverspendsAtMostItsCost()
      throws Exception {
    money.createAccount("fast", "USD", false);
    money.grantCredit("fast", "topup", 10_000, null, "10 ms"); // 10 ms of device time
    CreatedApiKey key = billing.apiKeys().create("fast");
    GatedStore store = new GatedStore(new JdbcLedgerStore(db.ledgerDataSource()));
    try (LedgerWriter ledger =
            new LedgerWriter(store, LedgerConfig.defaults().withDurability(Durability.FAST));
        LeasedBudgets replica = new LeasedBudgets(db.dataSource(), "fast", clock::get, false)) {
      Budgets.Meter m = replica.meter("priced", "cpu", "test cpu");
      Reservation first = reserve(replica, m, key.accountId(), 6 * MS);
      CompletableFuture<Void> queued =
          ledger.publish(LeasedBudgetsTest.record("fast-1", key, 6 * MS));
      assertThat(queued).as("FAST: done when queued, before any commit").isCompleted();
      first.settle(6 * MS);
      // the clock stands still: a short lease is not renewed by this ask
      assertThatThrownBy(() -> reserve(replica, m, key.accountId(), 6 * MS))
          .as("before a renewal the settled charge is counted locally")
          .hasCauseInstanceOf(InsufficientQuotaException.class);

      clock.addAndGet(1);
      replica.renewAll(); // reads 10 ms free: the first charge is queued, not committed
      Reservation second = reserve(replica, m, key.accountId(), 6 * MS);
      ledger.publish(LeasedBudgetsTest.record("fast-2", key, 6 * MS));
      second.settle(6 * MS);

      store.open.countDown();
      await().atMost(Duration.ofMinutes(1)).until(() -> deductions(key.accountId()) == 2);
    }
    BigDecimal overspend = overspend(key.accountId());
    BigDecimal uncommittedAtRenewal = BigDecimal.valueOf(6 * MS * PRICE);
    assertThat(overspend)
        .as("the FAST term happened: 12 ms charged against 10 ms of credit")
        .isEqualTo(BigDecimal.valueOf(2 * MS * PRICE));
    assertThat(overspend)
        .as("at most the cost of what was queued and uncommitted at the renewal")
        .isLessThanOrEqualTo(uncommittedAtRenewal);
    assertThat(money.verifyBalances()).isEmpty();
  }

  @Test
  void inDurableModeTheReservationIsHeldUntilTheCommitSoARenewalAdmitsNothingTwice()
      throws Exception {
    money.createAccount("durable", "USD", false);
    money.grantCredit("durable", "topup", 10_000, null, "10 ms");
    CreatedApiKey key = billing.apiKeys().create("durable");
    try (LeasedBudgets replica = new LeasedBudgets(db.dataSource(), "durable", clock::get, false)) {
      Budgets.Meter m = replica.meter("priced", "cpu", "test cpu");
      Reservation first = reserve(replica, m, key.accountId(), 6 * MS);
      // not settled: in DURABLE mode the server settles once the charge is committed
      clock.addAndGet(1);
      replica.renewAll();
      assertThatThrownBy(() -> reserve(replica, m, key.accountId(), 6 * MS))
          .as("the reservation in flight still holds its 6 ms after the renewal")
          .hasCauseInstanceOf(InsufficientQuotaException.class);
      first.settle(0);
    }
  }

  static Reservation reserve(Budgets b, Budgets.Meter m, long account, long ns) throws Exception {
    return LeasedBudgetsTest.reserve(b, m, account, ns);
  }

  static long deductions(long account) throws SQLException {
    io.gpumeter.billing.pricing.Settlement.settle(
        db.dataSource()); // V25: deducted off the write path
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT count(*) FROM charge_deductions WHERE account_id = ?")) {
      ps.setLong(1, account);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }

  static BigDecimal overspend(long account) throws SQLException {
    io.gpumeter.billing.pricing.Settlement.settle(db.dataSource());
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT coalesce(sum(overspend_nmicros), 0) FROM charge_deductions"
                    + " WHERE account_id = ?")) {
      ps.setLong(1, account);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getBigDecimal(1);
      }
    }
  }
}
