package io.gpumeter.billing.accounting;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.BillingConfig;
import io.gpumeter.billing.CreditGrant;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import java.math.BigInteger;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Credit expiry ({@link Accounting#expireCredits()}) on the real embedded PostgreSQL: one {@code
 * expiry} entry per expired grant however often (and however concurrently) the job runs, the
 * balance equal to the sum of its entries afterwards, and the job run by {@link Billing}'s
 * maintenance scheduler.
 */
class CreditExpiryTest {
  static final Instant NOW = Instant.now().truncatedTo(ChronoUnit.SECONDS);

  @TempDir static Path tmp;
  static Database db;

  @BeforeAll
  static void start() {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
  }

  @AfterAll
  static void stop() {
    db.close();
  }

  static Accounting at(Instant t) {
    return new Accounting(db.dataSource(), Clock.fixed(t, ZoneOffset.UTC));
  }

  static long expiryEntries(long grantId) throws SQLException {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT count(*) FROM balance_entries WHERE grant_id = ? AND kind = 'expiry'")) {
      ps.setLong(1, grantId);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }

  static BigInteger entrySum(long accountId) throws SQLException {
    io.gpumeter.billing.pricing.Settlement.settle(
        db.dataSource()); // V25: deducted off the write path
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT coalesce(sum(amount_nmicros), 0) FROM balance_entries"
                    + " WHERE account_id = ?")) {
      ps.setLong(1, accountId);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getBigDecimal(1).toBigIntegerExact();
      }
    }
  }

  /**
   * An expired grant gets exactly one expiry entry of its remainder even when the job runs twice;
   * an unexpired grant and a grant without expiry keep theirs; the balance is the sum of the
   * entries and equals the unexpired grants.
   */
  @Test
  void anExpiredGrantGetsItsEntryOnceWhenTheJobRunsTwice() throws SQLException {
    Accounting now = at(NOW);
    long account = now.createAccount("expiring", "USD", false).id();
    CreditGrant soon = now.grantCredit("expiring", "grant", 700, NOW.plusSeconds(3600), "");
    CreditGrant later = now.grantCredit("expiring", "topup", 50, NOW.plusSeconds(86_400), "");
    now.grantCredit("expiring", "topup", 5, null, "");
    assertThat(now.balance("expiring").micros()).isEqualTo(755);

    Accounting afterExpiry = at(NOW.plusSeconds(7200));
    assertThat(afterExpiry.expireCredits()).isGreaterThanOrEqualTo(1);
    assertThat(afterExpiry.expireCredits()).isZero();

    assertThat(expiryEntries(soon.id())).isEqualTo(1);
    assertThat(expiryEntries(later.id())).isZero();
    assertThat(afterExpiry.balance("expiring").micros()).isEqualTo(55);
    assertThat(afterExpiry.balance("expiring").exactNanoMicros()).isEqualTo(entrySum(account));
    assertThat(afterExpiry.verifyBalances()).isEmpty();
  }

  /**
   * Two replicas running the job at the same moment book each expired grant once: the remainder is
   * read again under the account's advisory lock.
   */
  @Test
  void concurrentRunsBookEachGrantOnce() throws Exception {
    Accounting now = at(NOW);
    List<CreditGrant> grants = new ArrayList<>();
    List<Long> accounts = new ArrayList<>();
    for (int i = 0; i < 8; i++) {
      String name = "race-" + i;
      accounts.add(now.createAccount(name, "USD", false).id());
      grants.add(now.grantCredit(name, "grant", 100 + i, NOW.plusSeconds(60), ""));
      grants.add(now.grantCredit(name, "grant", 10, NOW.plusSeconds(120), ""));
    }
    Instant after = NOW.plusSeconds(600);
    CyclicBarrier start = new CyclicBarrier(2);
    ExecutorService pool = Executors.newFixedThreadPool(2);
    try {
      List<Future<Integer>> runs = new ArrayList<>();
      for (int r = 0; r < 2; r++) {
        runs.add(
            pool.submit(
                () -> {
                  Accounting replica = at(after);
                  start.await(60, TimeUnit.SECONDS);
                  return replica.expireCredits();
                }));
      }
      int booked = 0;
      for (Future<Integer> f : runs) {
        booked += f.get(120, TimeUnit.SECONDS);
      }
      // Other tests' grants may expire by `after` too; these 16 are booked exactly once each.
      assertThat(booked).isGreaterThanOrEqualTo(grants.size());
    } finally {
      pool.shutdownNow();
    }
    for (CreditGrant g : grants) {
      assertThat(expiryEntries(g.id())).as("expiry entries of grant %d", g.id()).isEqualTo(1);
    }
    Accounting later = at(after);
    for (int i = 0; i < accounts.size(); i++) {
      assertThat(later.balance("race-" + i).exactNanoMicros()).isZero();
      assertThat(entrySum(accounts.get(i))).isZero();
    }
    assertThat(later.verifyBalances()).isEmpty();
  }

  /**
   * {@link Billing} runs the expiry with partition maintenance: at start (then every retention
   * interval); opening it twice past the expiry still leaves one entry.
   */
  @Test
  void theMaintenanceSchedulerRunsTheExpiry() throws SQLException {
    Instant t = NOW.plus(Duration.ofDays(3));
    Accounting before = at(t);
    long account = before.createAccount("scheduled", "USD", false).id();
    CreditGrant g = before.grantCredit("scheduled", "grant", 42, t.plusSeconds(60), "");
    Clock past = Clock.fixed(t.plusSeconds(120), ZoneOffset.UTC);
    for (int run = 0; run < 2; run++) {
      try (Billing billing = Billing.open(db, BillingConfig.defaults().withClock(past))) {
        assertThat(expiryEntries(g.id())).isEqualTo(1);
        assertThat(billing.accounting().balance("scheduled").micros()).isZero();
      }
    }
    assertThat(entrySum(account)).isZero();
  }
}
