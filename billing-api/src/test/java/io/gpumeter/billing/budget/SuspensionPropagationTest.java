package io.gpumeter.billing.budget;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.BillingConfig;
import io.gpumeter.billing.Budgets;
import io.gpumeter.billing.Budgets.Reservation;
import io.gpumeter.billing.InsufficientQuotaException;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.db.InvalidationListener;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * A suspension, a resumption and a credit grant reach every replica's budget within a second,
 * through the database's notifications (migration V18, kind {@code account}), not at the next lease
 * renewal: two {@link LeasedBudgets} (two replicas) on one real PostgreSQL, each with its own
 * {@link InvalidationListener} as in two processes, with periodic renewal <em>off</em> and a local
 * clock that does not move, so nothing but a notification can change what they admit.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class SuspensionPropagationTest {
  static final Instant JAN_1 = Instant.parse("2026-01-01T00:00:00Z");
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
    // 1 USD per device-second
    money.setPrice("priced", "cpu", "USD", 1_000_000, JAN_1, null);
  }

  @AfterAll
  static void stop() {
    billing.close();
    db.close();
  }

  /** A replica: its budgets and its own listener, subscribed as {@code Billing} subscribes. */
  record Replica(LeasedBudgets budgets, InvalidationListener listener) implements AutoCloseable {
    @Override
    public void close() {
      listener.close();
      budgets.close();
    }
  }

  Replica replica(String name) {
    LeasedBudgets b = new LeasedBudgets(db.dataSource(), name, clock::get, false);
    InvalidationListener l =
        InvalidationListener.create(db.dataSource(), Duration.ofMillis(250), Duration.ofMillis(250))
            .subscribe("account", id -> b.renewSoon(Long.parseLong(id)), b::renewAllSoon)
            .start();
    await().atMost(Duration.ofSeconds(30)).until(l::listening);
    return new Replica(b, l);
  }

  /** True if {@code b} admits {@code ns} now (and releases what it reserved). */
  static boolean admits(Budgets b, Budgets.Meter m, long account, long ns)
      throws InterruptedException, TimeoutException {
    try {
      Reservation r = b.reserve(m, account, ns).get(30, TimeUnit.SECONDS);
      r.settle(0);
      return true;
    } catch (ExecutionException e) {
      assertThat(e.getCause()).isInstanceOf(InsufficientQuotaException.class);
      return false;
    }
  }

  @Test
  void aSuspensionAndAResumptionReachTheOtherReplicaWithinOneSecond() throws Exception {
    // postpaid: both replicas admit without a slice of funds, so a suspension is all that refuses
    long acct = money.createAccount("suspend-me", "USD", true).id();
    try (Replica one = replica("one");
        Replica two = replica("two")) {
      Budgets.Meter m1 = one.budgets().meter("priced", "cpu", "test cpu");
      Budgets.Meter m2 = two.budgets().meter("priced", "cpu", "test cpu");
      assertThat(admits(one.budgets(), m1, acct, MS)).isTrue();
      assertThat(admits(two.budgets(), m2, acct, MS)).isTrue();
      // both hold a valid lease for 10 s; without the notification they would keep admitting
      money.suspend("suspend-me");
      await()
          .atMost(Duration.ofSeconds(1))
          .pollInterval(Duration.ofMillis(20))
          .until(() -> !admits(two.budgets(), m2, acct, MS));
      await()
          .atMost(Duration.ofSeconds(1))
          .pollInterval(Duration.ofMillis(20))
          .until(() -> !admits(one.budgets(), m1, acct, MS));
      money.resume("suspend-me");
      await()
          .atMost(Duration.ofSeconds(1))
          .pollInterval(Duration.ofMillis(20))
          .until(() -> admits(two.budgets(), m2, acct, MS));
    }
  }

  @Test
  void aCreditGrantReachesAReplicaThatRefusedWithinOneSecond() throws Exception {
    long acct = money.createAccount("top-me-up", "USD", false).id();
    money.grantCredit("top-me-up", "topup", 1_000, null, "1 ms");
    try (Replica one = replica("grant-one");
        Replica two = replica("grant-two")) {
      Budgets.Meter m2 = two.budgets().meter("priced", "cpu", "test cpu");
      assertThat(admits(two.budgets(), m2, acct, 5 * MS))
          .as("1 ms of credit does not cover 5 ms")
          .isFalse();
      money.grantCredit("top-me-up", "grant", 100_000, null, "100 ms");
      await()
          .atMost(Duration.ofSeconds(1))
          .pollInterval(Duration.ofMillis(20))
          .until(() -> admits(two.budgets(), m2, acct, 5 * MS));
      assertThat(one.listener().received()).as("the other replica was told too").isPositive();
    }
  }
}
