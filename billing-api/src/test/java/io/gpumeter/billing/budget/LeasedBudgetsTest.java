package io.gpumeter.billing.budget;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.Account;
import io.gpumeter.billing.Billing;
import io.gpumeter.billing.BillingConfig;
import io.gpumeter.billing.Budgets;
import io.gpumeter.billing.Budgets.Reservation;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.InsufficientQuotaException;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.math.BigDecimal;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import javax.sql.DataSource;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Leases and reservations on the real embedded PostgreSQL, with two {@link LeasedBudgets} as two
 * replicas on one database; renewals are run by hand and the local clock is the test's.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class LeasedBudgetsTest {
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

  LeasedBudgets replica(String name) {
    return new LeasedBudgets(db.dataSource(), name, clock::get, false);
  }

  /** Reserves, or throws a {@link CompletionException} with the refusal as its cause. */
  static Reservation reserve(Budgets b, Budgets.Meter m, long account, long ns) throws Exception {
    try {
      return b.reserve(m, account, ns).get(30, TimeUnit.SECONDS);
    } catch (ExecutionException e) {
      throw new CompletionException(e.getCause());
    }
  }

  /** Credits of 10 ms of device time at {@link #PRICE}. */
  static Account accountWithTenMs(String name) {
    Account a = money.createAccount(name, "USD", false);
    money.grantCredit(name, "topup", 10_000, null, "10 ms");
    return a;
  }

  @Test
  void twoReplicasTogetherNeverReserveMoreThanTheFundsAndRefuseWhatIsLeftOver() throws Exception {
    long acct = accountWithTenMs("two-replicas").id();
    try (LeasedBudgets a = replica("a");
        LeasedBudgets b = replica("b")) {
      Budgets.Meter ma = a.meter("priced", "cpu", "test cpu");
      Budgets.Meter mb = b.meter("priced", "cpu", "test cpu");
      List<Reservation> held = new ArrayList<>();
      int refused = 0;
      for (int i = 0; i < 16; i++) {
        clock.addAndGet(1); // each ask is newer than the last renewal: a short lease renews
        try {
          held.add(i % 2 == 0 ? reserve(a, ma, acct, MS) : reserve(b, mb, acct, MS));
        } catch (CompletionException e) {
          assertThat(e.getCause())
              .isInstanceOf(InsufficientQuotaException.class)
              .hasMessageContaining("allowance and prepaid credits are exhausted");
          assertThat(((InsufficientQuotaException) e.getCause()).reason())
              .isEqualTo(InsufficientQuotaException.Reason.EXHAUSTED);
          refused++;
        }
        assertThat(leasedCredit(acct))
            .as("the leases of both replicas never exceed the credits")
            .isLessThanOrEqualTo(BigDecimal.valueOf(10_000L * 1_000_000_000L));
      }
      assertThat(held).hasSizeLessThanOrEqualTo(10);
      assertThat(refused).isEqualTo(16 - held.size()).isPositive();
      held.forEach(r -> r.settle(0)); // nothing was charged: all of it is free again
      clock.addAndGet(1);
      a.renewAll();
      assertThat(reserve(a, ma, acct, 4 * MS)).isNotNull();
    }
    assertThat(leaseRows(acct)).as("closing returns the leases").isZero();
  }

  @Test
  void aSettledChargeIsCountedOnceWhetherOrNotTheRenewalHasSeenIt() throws Exception {
    Account account = accountWithTenMs("settles");
    CreatedApiKey key = billing.apiKeys().create("settles");
    try (LeasedBudgets a = replica("s")) {
      Budgets.Meter m = a.meter("priced", "cpu", "test cpu");
      Reservation r = reserve(a, m, account.id(), 6 * MS);
      // the charge is committed (deducted by the V7 trigger), then settled locally
      billing.ledger().publish(record("settles-1", key, 6 * MS)).get(30, TimeUnit.SECONDS);
      r.settle(6 * MS);
      clock.addAndGet(1);
      assertThatThrownBy(() -> reserve(a, m, account.id(), 5 * MS))
          .hasCauseInstanceOf(InsufficientQuotaException.class);
      clock.addAndGet(1);
      a.renewAll(); // reads the deducted balance: 4 ms left
      assertThat(reserve(a, m, account.id(), 4 * MS)).isNotNull();
      clock.addAndGet(1);
      assertThatThrownBy(() -> reserve(a, m, account.id(), MS))
          .hasCauseInstanceOf(InsufficientQuotaException.class);
    }
  }

  @Test
  void aSuspendedAccountIsRefusedAndAResumedOneServedAfterTheNextRenewal() throws Exception {
    long acct = accountWithTenMs("suspended").id();
    money.suspend("suspended");
    try (LeasedBudgets a = replica("p")) {
      Budgets.Meter m = a.meter("priced", "cpu", "test cpu");
      assertThatThrownBy(() -> reserve(a, m, acct, MS))
          .cause()
          .isInstanceOf(InsufficientQuotaException.class)
          .hasMessageContaining("suspended");
      Budgets.Meter unpriced = a.meter("unpriced", "cpu", "test cpu");
      assertThatThrownBy(() -> reserve(a, unpriced, acct, MS))
          .as("suspension refuses even what is not charged in money")
          .hasCauseInstanceOf(InsufficientQuotaException.class);
      money.resume("suspended");
      clock.addAndGet(1);
      a.renewAll();
      assertThat(reserve(a, m, acct, MS)).isNotNull();
    }
  }

  @Test
  void anUnpricedModelIsServedWithoutFundsAndItsStepsAreNeverStopped() throws Exception {
    long acct = money.createAccount("no-credit", "USD", false).id();
    try (LeasedBudgets a = replica("u")) {
      Reservation r = reserve(a, a.meter("unpriced", "cpu", "test cpu"), acct, 1_000 * MS);
      assertThat(r.mayStep(Long.MAX_VALUE / 2, Long.MAX_VALUE / 2)).isTrue();
      r.settle(1_000 * MS);
      assertThatThrownBy(() -> reserve(a, a.meter("priced", "cpu", "test cpu"), acct, MS))
          .cause()
          .isInstanceOf(InsufficientQuotaException.class);
    }
  }

  @Test
  void aStepIsAllowedWhileTheLeaseCanExtendTheReservationAndRefusedAfter() throws Exception {
    long acct = accountWithTenMs("steps").id();
    try (LeasedBudgets a = replica("x")) {
      Reservation r = reserve(a, a.meter("priced", "cpu", "test cpu"), acct, 2 * MS);
      assertThat(r.mayStep(MS, MS)).isTrue();
      assertThat(r.mayStep(5 * MS, 4 * MS)).as("extended from the lease").isTrue();
      assertThat(r.mayStep(9 * MS, MS)).isTrue();
      assertThat(r.mayStep(10 * MS, MS)).as("11 ms > the 10 ms of credits").isFalse();
      r.settle(10 * MS);
    }
  }

  @Test
  void aDeadReplicasLeaseExpiresAndItsSliceIsFreeAgain() throws Exception {
    long acct = accountWithTenMs("dead").id();
    try (LeasedBudgets dead = replica("dead-1");
        LeasedBudgets b = replica("alive")) {
      reserve(dead, dead.meter("priced", "cpu", "test cpu"), acct, MS); // leases all 10 ms
      Budgets.Meter m = b.meter("priced", "cpu", "test cpu");
      assertThatThrownBy(() -> reserve(b, m, acct, MS))
          .hasCauseInstanceOf(InsufficientQuotaException.class);
      // the dead replica never renews: its lease runs out (moved back in time, not waited for)
      try (Connection c = db.dataSource().getConnection();
          PreparedStatement ps =
              c.prepareStatement(
                  "UPDATE budget_leases SET granted_at = now() - interval '20 seconds',"
                      + " expires_at = now() - interval '10 seconds' WHERE replica = 'dead-1'")) {
        assertThat(ps.executeUpdate()).isEqualTo(1);
      }
      clock.addAndGet(1);
      assertThat(reserve(b, m, acct, 9 * MS)).isNotNull();
    }
  }

  @Test
  void aReservationMadeWhileASmallerLeaseIsWrittenIsCoveredByThatLease() throws Exception {
    long acct = accountWithTenMs("shrinking").id();
    CommitGate gate = new CommitGate();
    try (LeasedBudgets a =
            new LeasedBudgets(gate.wrap(db.dataSource()), "shrink-a", clock::get, false);
        LeasedBudgets b = replica("shrink-b")) {
      Budgets.Meter ma = a.meter("priced", "cpu", "test cpu");
      Budgets.Meter mb = b.meter("priced", "cpu", "test cpu");
      reserve(a, ma, acct, 4 * MS); // alone: leases all 10 ms
      clock.addAndGet(1);
      assertThatThrownBy(() -> reserve(b, mb, acct, MS))
          .as("all of it is a's")
          .hasCauseInstanceOf(InsufficientQuotaException.class);
      // b now holds an (empty) lease, so a's next renewal asks for an even share: 5 ms, less than
      // the 10 ms it holds. A first request on another meter renews; its commit is held.
      gate.arm();
      clock.addAndGet(1);
      var unpriced = a.reserve(a.meter("unpriced", "cpu", "test cpu"), acct, MS);
      assertThat(gate.blocked.await(30, TimeUnit.SECONDS))
          .as("the renewal reached commit")
          .isTrue();
      // Meanwhile a request asks 3 ms: the old lease has 6 ms left, the one being written 1 ms.
      clock.addAndGet(1);
      var during = a.reserve(ma, acct, 3 * MS);
      gate.release.countDown();
      assertThat(unpriced.get(30, TimeUnit.SECONDS)).isNotNull();
      assertThat(during.get(30, TimeUnit.SECONDS))
          .as("served once a's row covers it (4 + 3 ms)")
          .isNotNull();
      clock.addAndGet(1);
      assertThatThrownBy(() -> reserve(b, mb, acct, 5 * MS))
          .as("b may lease only what a's row leaves: 3 ms, not 5")
          .hasCauseInstanceOf(InsufficientQuotaException.class);
      assertThat(leasedCredit(acct))
          .isLessThanOrEqualTo(BigDecimal.valueOf(10_000L * 1_000_000_000L));
    }
  }

  @Test
  void aReservationTakesNoStepAfterItsLeaseRanOutEvenIfItStillCoversIt() throws Exception {
    long acct = accountWithTenMs("ran-out").id();
    try (LeasedBudgets a = replica("ran-out")) {
      Reservation r = reserve(a, a.meter("priced", "cpu", "test cpu"), acct, 4 * MS);
      Reservation free = reserve(a, a.meter("unpriced", "cpu", "test cpu"), acct, 4 * MS);
      assertThat(r.mayStep(MS, MS)).isTrue();
      // not renewed for a lease's lifetime: its row may expire and another replica lease the funds
      clock.addAndGet(LeasedBudgets.LEASE_TTL.toNanos());
      assertThat(r.mayStep(MS, MS)).as("covered, but the lease ran out").isFalse();
      assertThat(free.mayStep(MS, MS)).as("not charged in money: never stopped").isTrue();
      r.settle(2 * MS);
      free.settle(2 * MS);
    }
  }

  /** Holds the first commit after {@link #arm} until {@link #release} (a renewal in flight). */
  static final class CommitGate {
    final CountDownLatch blocked = new CountDownLatch(1);
    final CountDownLatch release = new CountDownLatch(1);
    private final AtomicBoolean armed = new AtomicBoolean();

    void arm() {
      armed.set(true);
    }

    DataSource wrap(DataSource ds) {
      return (DataSource)
          Proxy.newProxyInstance(
              DataSource.class.getClassLoader(),
              new Class<?>[] {DataSource.class},
              (proxy, method, args) -> {
                Object out = invoke(ds, method, args);
                return out instanceof Connection c ? connection(c) : out;
              });
    }

    private Connection connection(Connection c) {
      return (Connection)
          Proxy.newProxyInstance(
              Connection.class.getClassLoader(),
              new Class<?>[] {Connection.class},
              (proxy, method, args) -> {
                if (method.getName().equals("commit") && armed.compareAndSet(true, false)) {
                  blocked.countDown();
                  if (!release.await(60, TimeUnit.SECONDS)) {
                    throw new SQLException("the test never released the commit");
                  }
                }
                return invoke(c, method, args);
              });
    }

    private static Object invoke(Object target, Method method, Object[] args) throws Throwable {
      try {
        return method.invoke(target, args);
      } catch (InvocationTargetException e) {
        throw e.getCause();
      }
    }
  }

  static UsageRecord record(String id, CreatedApiKey key, long ns) {
    Instant now = Instant.now();
    return new UsageRecord(
        id,
        key.keyId(),
        key.accountId(),
        "priced",
        TestSupport.CPU,
        "tokens",
        ns,
        ns / 2,
        ns - ns / 2,
        5,
        3,
        1_000,
        4,
        UsageStatus.OK,
        now.minusMillis(10),
        now,
        id,
        0,
        0);
  }

  static BigDecimal leasedCredit(long account) throws SQLException {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT coalesce(sum(credit_nmicros), 0) FROM budget_leases"
                    + " WHERE account_id = ? AND expires_at > now()")) {
      ps.setLong(1, account);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getBigDecimal(1);
      }
    }
  }

  static int leaseRows(long account) throws SQLException {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT count(*) FROM budget_leases WHERE account_id = ?")) {
      ps.setLong(1, account);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getInt(1);
      }
    }
  }
}
