package io.gpumeter.billing.accounting;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.Balance;
import io.gpumeter.billing.Billing;
import io.gpumeter.billing.BillingConfig;
import io.gpumeter.billing.ChargeCost;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.CreditGrant;
import io.gpumeter.billing.Invoice;
import io.gpumeter.billing.InvoiceLine;
import io.gpumeter.billing.InvoiceVerification;
import io.gpumeter.billing.PriceVersion;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.VoidReason;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import java.math.BigInteger;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Instant;
import java.time.YearMonth;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Pricing and deduction at charge time, voids, invoices and their verification, on the real
 * embedded PostgreSQL through the real ledger.
 */
class AccountingTest {
  static final long SECOND = 1_000_000_000L;
  static final Instant JAN_1 = Instant.parse("2026-01-01T00:00:00Z");

  @TempDir static Path tmp;
  static Database db;
  static Billing billing;
  static Accounting money;

  @BeforeAll
  static void start() {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
    billing = Billing.open(db, BillingConfig.defaults());
    money = billing.accounting();
  }

  @AfterAll
  static void stop() {
    billing.close();
    db.close();
  }

  static UsageRecord record(
      String id, CreatedApiKey key, String model, TimerInfo timer, Instant at, long ns) {
    return new UsageRecord(
        id,
        key.keyId(),
        key.accountId(),
        model,
        timer,
        "tokens",
        ns,
        ns / 2,
        ns - ns / 2,
        5,
        3,
        1_000,
        4,
        UsageStatus.OK,
        at.minusMillis(10),
        at,
        id,
        0,
        0);
  }

  static void publish(UsageRecord r) throws Exception {
    billing.ledger().publish(r).get(30, TimeUnit.SECONDS);
  }

  @Test
  void theDeviceClassIsNormalisedByOneRule() throws SQLException {
    try (Connection c = dataSource().getConnection();
        Statement st = c.createStatement();
        ResultSet rs =
            st.executeQuery(
                "SELECT device_class('cpu', 'Intel Xeon'), device_class('cuda', 'NVIDIA H100 80GB"
                    + " HBM3'), device_class('cuda', 'NVIDIA H200'), device_class('cuda', '')")) {
      rs.next();
      assertThat(rs.getString(1)).isEqualTo("cpu");
      assertThat(rs.getString(2)).isEqualTo("nvidia-h100-80gb");
      assertThat(rs.getString(3)).isEqualTo("nvidia-h200");
      assertThat(rs.getString(4)).isEqualTo("cuda");
    }
  }

  static javax.sql.DataSource dataSource() {
    return db.dataSource();
  }

  /**
   * Allowance first, then credits earliest-expiring first, then overspend (no postpaid); a replayed
   * request id deducts nothing more; a void gives the credits back; the invoice adds up, verifies
   * from the raw records, and late usage after finalization lands on the next invoice.
   */
  @Test
  void chargesArePricedAndDeductedOnceInOrderAndInvoicedExactly() throws Exception {
    money.createAccount("acme", "USD", false);
    CreatedApiKey key = billing.apiKeys().create("acme");
    PriceVersion star = money.setPrice("*", "cpu", "USD", 3_000, JAN_1, null);
    money.createPlan("small", 1_500_000_000L);
    money.assignPlan("acme", "small", JAN_1);
    Instant in2027 = Instant.parse("2027-06-01T00:00:00Z");
    CreditGrant late = money.grantCredit("acme", "topup", 5_000, in2027, "top-up");
    CreditGrant early =
        money.grantCredit("acme", "grant", 2_000, Instant.parse("2027-01-01T00:00:00Z"), "promo");
    Instant mar = Instant.parse("2026-03-02T10:00:00Z");

    publish(record("acme-r1", key, "toy", TestSupport.CPU, mar, SECOND));
    publish(record("acme-r2", key, "toy", TestSupport.CPU, mar.plusSeconds(86_400), SECOND));
    publish(record("acme-r2", key, "toy", TestSupport.CPU, mar.plusSeconds(86_400), SECOND));
    publish(record("acme-r3", key, "toy", TestSupport.CPU, mar.plusSeconds(2 * 86_400), SECOND));
    publish(
        record("acme-r4", key, "toy", TestSupport.CPU, mar.plusSeconds(3 * 86_400), 2 * SECOND));

    ChargeCost r2 = money.chargeCost("acme-r2").orElseThrow();
    assertThat(r2.exactNanoMicros()).isEqualTo(BigInteger.valueOf(3_000L * SECOND));
    assertThat(r2.roundedMicros()).isEqualTo(3_000);
    assertThat(r2.currency()).isEqualTo("USD");
    assertThat(r2.priceVersionId()).isEqualTo(star.id());
    assertThat(billing.chargeCost("acme-r2")).contains(r2);

    // r1: 1 s included. r2: 0.5 s included, 1500 from the early grant. r3: 500 early + 2500 late.
    // r4: 2500 late, 3500 overspend.
    assertThat(remaining("acme", early.id())).isZero();
    assertThat(remaining("acme", late.id())).isZero();
    Balance b = money.balance("acme");
    assertThat(b.micros()).isZero();

    billing.voidCharge("acme-r3", VoidReason.CLIENT_GONE).get(30, TimeUnit.SECONDS);
    assertThat(remaining("acme", early.id())).isEqualTo(500L * 1_000_000_000L);
    assertThat(remaining("acme", late.id())).isEqualTo(2_500L * 1_000_000_000L);
    assertThat(money.balance("acme").micros()).isEqualTo(3_000);

    YearMonth march = YearMonth.of(2026, 3);
    Invoice inv = money.invoice("acme", march);
    assertThat(inv.isFinal()).isFalse();
    assertThat(inv.lines())
        .containsExactly(
            new InvoiceLine(
                "toy",
                "cpu",
                star.id(),
                3_000,
                null,
                3,
                4 * SECOND,
                1_500_000_000L,
                2_500_000_000L,
                7_500,
                4_000,
                3_500));
    assertThat(inv.totalMicros()).isEqualTo(3_500);
    InvoiceVerification v = money.verifyInvoice("acme", march);
    assertThat(v.problems()).isEmpty();
    assertThat(v.recomputed().lines()).isEqualTo(inv.lines());

    Invoice fin = money.finalizeInvoice("acme", march);
    assertThat(fin.isFinal()).isTrue();
    assertThat(money.invoice("acme", march)).isEqualTo(fin);
    assertThatThrownBy(() -> money.finalizeInvoice("acme", march))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("final already");

    // Late usage from March, after March was finalized: on April's invoice, marked late.
    publish(
        record(
            "acme-r5", key, "toy", TestSupport.CPU, Instant.parse("2026-03-20T00:00:00Z"), SECOND));
    assertThat(money.invoice("acme", march)).isEqualTo(fin);
    Invoice april = money.invoice("acme", YearMonth.of(2026, 4));
    assertThat(april.lines())
        .containsExactly(
            new InvoiceLine(
                "toy", "cpu", star.id(), 3_000, march, 1, SECOND, 0, SECOND, 3_000, 3_000, 0));
    assertThat(money.verifyInvoice("acme", march).problems()).isEmpty();
    assertThat(money.verifyInvoice("acme", YearMonth.of(2026, 4)).problems()).isEmpty();
    assertThat(money.verifyBalances()).isEmpty();
    assertThat(money.balance("acme").micros()).isZero();
    assertThat(money.listInvoices("acme"))
        .extracting(Invoice::period)
        .containsExactly(march, YearMonth.of(2026, 4));
    assertThat(Accounting.format(fin, "csv")).contains(",TOTAL,").endsWith(",3500\n");
    assertThat(Accounting.format(fin, "json")).contains("\"total_micros\":3500");
    assertThat(Accounting.format(fin, "html")).contains("<th class=n>0.003500</th>");
  }

  /** A model's own price wins over '*'; a new version takes over from its start; postpaid. */
  @Test
  void aModelsOwnVersionWinsAndANewVersionTakesOverFromItsStart() throws Exception {
    money.createAccount("beta", "EUR", true);
    CreatedApiKey key = billing.apiKeys().create("beta");
    TimerInfo h100 =
        new TimerInfo("cuda-event", "cuda:0", "NVIDIA H100 80GB HBM3", "GPU-1", "550", "12.4");
    PriceVersion star = money.setPrice("*", "nvidia-h100-80gb", "EUR", 1_000, JAN_1, null);
    PriceVersion toy1 =
        money.setPrice(
            "toy", "nvidia-h100-80gb", "EUR", 1_200, Instant.parse("2026-05-01T00:00:00Z"), null);
    publish(record("beta-1", key, "toy", h100, Instant.parse("2026-05-05T00:00:00Z"), SECOND));
    PriceVersion toy2 =
        money.setPrice(
            "toy", "nvidia-h100-80gb", "EUR", 1_500, Instant.parse("2026-05-10T00:00:00Z"), null);
    publish(record("beta-2", key, "toy", h100, Instant.parse("2026-05-12T00:00:00Z"), SECOND));
    publish(record("beta-3", key, "big", h100, Instant.parse("2026-05-12T00:00:00Z"), 3));
    assertThat(money.chargeCost("beta-1").orElseThrow().priceVersionId()).isEqualTo(toy1.id());
    assertThat(money.chargeCost("beta-2").orElseThrow().priceVersionId()).isEqualTo(toy2.id());
    ChargeCost tiny = money.chargeCost("beta-3").orElseThrow();
    assertThat(tiny.priceVersionId()).isEqualTo(star.id());
    assertThat(tiny.exactNanoMicros()).isEqualTo(BigInteger.valueOf(3_000));
    assertThat(tiny.roundedMicros()).isZero();
    Invoice may = money.invoice("beta", YearMonth.of(2026, 5));
    assertThat(may.lines()).extracting(InvoiceLine::dueMicros).containsExactly(0L, 1_200L, 1_500L);
    assertThat(may.totalMicros()).isEqualTo(2_700);
    assertThat(money.verifyInvoice("beta", YearMonth.of(2026, 5)).problems()).isEmpty();
  }

  /** Each bad input is refused with a message that names it, and changes nothing. */
  @Test
  void badInputIsRefusedClearlyAndChangesNothing() {
    money.createAccount("gamma", "GBP", false);
    money.setPrice("toy", "cpu", "GBP", 100, JAN_1, Instant.parse("2026-02-01T00:00:00Z"));
    List<PriceVersion> prices = money.listPrices();
    assertThatThrownBy(() -> money.setPrice("toy", "cpu", "GBP", -1, JAN_1, null))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("price must be >= 0");
    assertThatThrownBy(
            () ->
                money.setPrice(
                    "toy",
                    "cpu",
                    "GBP",
                    200,
                    Instant.parse("2026-01-15T00:00:00Z"),
                    Instant.parse("2026-03-01T00:00:00Z")))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("overlaps");
    assertThatThrownBy(() -> money.setPrice("toy", "cpu", "ABC", 1, JAN_1, null))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("unknown currency 'ABC'");
    assertThat(money.listPrices()).isEqualTo(prices);
    int accounts = money.listAccounts().size();
    assertThatThrownBy(() -> money.createAccount("delta", "ABC", false))
        .hasMessageContaining("unknown currency");
    assertThat(money.listAccounts()).hasSize(accounts);
    money.createPlan("tiny", 1);
    assertThatThrownBy(() -> money.assignPlan("nobody", "tiny", JAN_1))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("no account named 'nobody'");
    assertThatThrownBy(
            () ->
                money.grantCredit("gamma", "grant", 10, Instant.parse("2020-01-01T00:00:00Z"), ""))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("expiry must be in the future");
    assertThatThrownBy(() -> money.grantCredit("gamma", "grant", -5, null, ""))
        .hasMessageContaining("must be > 0");
    assertThat(money.listCredits("gamma")).isEmpty();
    assertThat(money.balance("gamma").exactNanoMicros()).isZero();
  }

  @Test
  void balanceEntriesAreAppendOnly() throws SQLException {
    money.createAccount("epsilon", "USD", false);
    money.grantCredit("epsilon", "grant", 10, null, "");
    try (Connection c = dataSource().getConnection();
        Statement st = c.createStatement()) {
      assertThatThrownBy(() -> st.executeUpdate("UPDATE balance_entries SET amount_nmicros = 0"))
          .hasMessageContaining("append-only");
      assertThatThrownBy(() -> st.executeUpdate("DELETE FROM balance_entries"))
          .hasMessageContaining("append-only");
    }
    assertThat(money.balance("epsilon").micros()).isEqualTo(10);
  }

  static long remaining(String account, long grantId) {
    return money.listCredits(account).stream()
        .filter(g -> g.id() == grantId)
        .findFirst()
        .orElseThrow()
        .remainingNanoMicros()
        .longValueExact();
  }
}
