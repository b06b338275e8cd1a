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
        // the class's weight in the pool (ppm) and what the charge took from it: included x w,
        // plus, on the one charge that empties the pool, a sliver of under one device-ns
        long w = rnd.nextLong(1, 3_000_000L);
        BigInteger pool =
            BigInteger.valueOf(included)
                .multiply(BigInteger.valueOf(w))
                .add(BigInteger.valueOf(rnd.nextInt(8) == 0 ? rnd.nextLong(0, w) : 0));
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
                sign < 0 ? credit.negate() : credit,
                sign < 0 ? pool.negate() : pool));
      }
      List<InvoiceLine> lines = sum(charges);
      long total = LineTotals.total(lines);
      long viaLines = lines.stream().mapToLong(InvoiceLine::dueMicros).sum();
      assertThat(total).isEqualTo(viaLines);
      Map<String, BigInteger> exact = new HashMap<>();
      Map<String, BigInteger> pools = new HashMap<>();
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
        pools.merge(k, c.poolUsed(), BigInteger::add);
      }
      BigInteger poolOfLines = BigInteger.ZERO;
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
        // the pool deduction in the pool's unit: the line's exact sum, and its decimal string
        // is that integer / 10^15 exactly
        assertThat(l.poolUsedPpmNs()).isEqualTo(pools.get(k));
        assertThat(new java.math.BigDecimal(l.poolUsedWeightedDeviceSeconds()).movePointRight(15))
            .isEqualByComparingTo(new java.math.BigDecimal(l.poolUsedPpmNs()));
        poolOfLines = poolOfLines.add(l.poolUsedPpmNs());
      }
      assertThat(poolOfLines)
          .isEqualTo(
              charges.stream()
                  .map(LineTotals.Charge::poolUsed)
                  .reduce(BigInteger.ZERO, BigInteger::add));
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
