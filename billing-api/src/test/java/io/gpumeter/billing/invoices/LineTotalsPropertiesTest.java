package io.gpumeter.billing.invoices;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.InvoiceLine;
import io.gpumeter.billing.pricing.Money;
import java.math.BigInteger;
import java.time.YearMonth;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Invoice lines add up to the total exactly, whatever the charges and their order. */
class LineTotalsPropertiesTest {
  @Test
  void linesAddUpToTheTotalExactlyAndEachLineRoundsItsExactSumOnce() {
    SplittableRandom rnd = new SplittableRandom(42L);
    String[] models = {"toy", "big", "*"};
    String[] classes = {"cpu", "nvidia-h100-80gb", "nvidia-h200"};
    for (int trial = 0; trial < 500; trial++) {
      List<LineTotals.Charge> charges = new ArrayList<>();
      int n = rnd.nextInt(1, 300);
      for (int i = 0; i < n; i++) {
        int pv = rnd.nextInt(3);
        long price = 1_000L * (pv + 1) + rnd.nextInt(2);
        long ns = rnd.nextLong(0, 50_000_000_000L);
        long included = rnd.nextBoolean() ? 0 : rnd.nextLong(0, ns + 1);
        long billable = ns - included;
        BigInteger cost = Money.cost(billable, price);
        BigInteger credit =
            cost.signum() == 0
                ? BigInteger.ZERO
                : new BigInteger(cost.bitLength(), new java.util.Random(rnd.nextLong())).mod(cost);
        int sign = rnd.nextInt(10) == 0 ? -1 : 1;
        charges.add(
            new LineTotals.Charge(
                models[rnd.nextInt(models.length)],
                classes[pv],
                pv + 1,
                price,
                rnd.nextInt(5) == 0 ? YearMonth.of(2026, 1 + rnd.nextInt(12)) : null,
                sign,
                sign * ns,
                sign * included,
                sign * billable,
                sign < 0 ? credit.negate() : credit));
      }
      List<InvoiceLine> lines = sum(charges);
      long total = LineTotals.total(lines);
      long viaLines = lines.stream().mapToLong(InvoiceLine::dueMicros).sum();
      assertThat(total).isEqualTo(viaLines);
      Map<String, BigInteger> exact = new HashMap<>();
      for (LineTotals.Charge c : charges) {
        String k =
            c.model()
                + "|"
                + c.deviceClass()
                + "|"
                + c.priceVersionId()
                + "|"
                + c.priceMicrosPerSecond()
                + "|"
                + c.lateFrom();
        exact.merge(
            k,
            Money.cost(Math.abs(c.billableNs()), c.priceMicrosPerSecond())
                .multiply(BigInteger.valueOf(Long.signum(c.billableNs()))),
            BigInteger::add);
      }
      for (InvoiceLine l : lines) {
        String k =
            l.model()
                + "|"
                + l.deviceClass()
                + "|"
                + l.priceVersionId()
                + "|"
                + l.unitPriceMicrosPerSecond()
                + "|"
                + l.lateFrom();
        assertThat(l.amountMicros()).isEqualTo(Money.roundToMicros(exact.get(k)));
        assertThat(l.dueMicros()).isEqualTo(l.amountMicros() - l.creditsMicros());
        assertThat(l.includedNs() + l.billableNs()).isEqualTo(l.deviceNs());
      }
      // the order charges arrive in changes nothing
      List<LineTotals.Charge> shuffled = new ArrayList<>(charges);
      Collections.shuffle(shuffled, new java.util.Random(trial));
      assertThat(sum(shuffled)).isEqualTo(lines);
    }
  }

  static List<InvoiceLine> sum(List<LineTotals.Charge> charges) {
    LineTotals t = new LineTotals();
    charges.forEach(t::add);
    return t.lines();
  }
}
