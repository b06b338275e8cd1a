package io.gpumeter.billing.invoices;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.ChargeBreakdown;
import io.gpumeter.billing.InvoiceLine;
import io.gpumeter.billing.pricing.Money;
import io.gpumeter.billing.pricing.Receipts;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * A receipt's {@code charged_*} figures ({@link ChargeBreakdown}) and the invoice line they are on
 * agree to the micro-unit: the line's amount and credits are the rounded sums of the requests'
 * exact figures, and each request rounds by the same one rule.
 */
class ChargeBreakdownPropertiesTest {
  @Test
  void aLineIsTheRoundedSumOfItsReceiptsExactFigures() {
    SplittableRandom rnd = new SplittableRandom(7L);
    for (int trial = 0; trial < 300; trial++) {
      long price = rnd.nextLong(0, 5_000_000L);
      long w = rnd.nextLong(1, 4_000_000L);
      LineTotals totals = new LineTotals();
      List<ChargeBreakdown> receipts = new ArrayList<>();
      int n = rnd.nextInt(1, 200);
      for (int i = 0; i < n; i++) {
        long ns = rnd.nextLong(0, 30_000_000_000L);
        long included = rnd.nextBoolean() ? 0 : rnd.nextLong(0, ns + 1);
        long billable = ns - included;
        BigInteger pool = BigInteger.valueOf(included).multiply(BigInteger.valueOf(w));
        BigInteger amount = Money.cost(billable, price);
        BigInteger credits =
            amount.signum() == 0
                ? BigInteger.ZERO
                : new BigInteger(amount.bitLength(), new Random(rnd.nextLong())).mod(amount);
        BigInteger rest = amount.subtract(credits);
        boolean postpaid = rnd.nextBoolean();
        ChargeBreakdown b =
            Receipts.breakdown(
                included,
                pool,
                billable,
                price,
                credits,
                postpaid ? rest : BigInteger.ZERO,
                postpaid ? BigInteger.ZERO : rest);
        assertThat(b.amountNanoMicros()).isEqualTo(amount);
        assertThat(b.amountMicros()).isEqualTo(Money.roundToMicros(amount));
        assertThat(b.creditsMicros()).isEqualTo(Money.roundToMicros(credits));
        assertThat(b.dueMicros()).isEqualTo(b.amountMicros() - b.creditsMicros());
        receipts.add(b);
        totals.add(
            new LineTotals.Charge(
                "m", "cpu", 1, price, null, 1, ns, included, billable, credits, pool));
      }
      List<InvoiceLine> lines = totals.lines();
      assertThat(lines).hasSize(1);
      InvoiceLine line = lines.get(0);
      BigInteger amount = BigInteger.ZERO;
      BigInteger credits = BigInteger.ZERO;
      BigInteger pool = BigInteger.ZERO;
      long included = 0;
      long billable = 0;
      for (ChargeBreakdown b : receipts) {
        amount = amount.add(b.amountNanoMicros());
        credits = credits.add(b.creditsNanoMicros());
        pool = pool.add(b.poolUsedPpmNs());
        included += b.includedNs();
        billable += b.billableNs();
      }
      assertThat(line.amountMicros()).isEqualTo(Money.roundToMicros(amount));
      assertThat(line.creditsMicros()).isEqualTo(Money.roundToMicros(credits));
      assertThat(line.poolUsedPpmNs()).isEqualTo(pool);
      assertThat(line.includedNs()).isEqualTo(included);
      assertThat(line.billableNs()).isEqualTo(billable);
    }
  }

  @Test
  void partsThatDoNotAddUpToTheAmountAreRefused() {
    BigInteger one = BigInteger.ONE;
    // 10 ns at 3 micro-units/s = 30 nano-micro-units
    assertThat(
            Receipts.breakdown(
                    0, BigInteger.ZERO, 10, 3, BigInteger.TEN, BigInteger.TEN, BigInteger.TEN)
                .dueMicros())
        .isZero();
    assertThatThrownBy(
            () ->
                Receipts.breakdown(0, BigInteger.ZERO, 10, 3, BigInteger.TEN, BigInteger.TEN, one))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("add up to billable x price = 30");
    assertThatThrownBy(
            () ->
                Receipts.breakdown(
                    -1, BigInteger.ZERO, 10, 3, BigInteger.TEN, BigInteger.TEN, BigInteger.TEN))
        .isInstanceOf(IllegalArgumentException.class);
  }
}
