package io.gpumeter.billing.invoices;

import io.gpumeter.billing.InvoiceLine;
import io.gpumeter.billing.pricing.Money;
import java.math.BigInteger;
import java.time.YearMonth;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Sums charges into invoice lines, exactly: each line keeps its exact amounts in nano-micro-units
 * and rounds once ({@link Money#roundToMicros}); the total is the sum of the rounded lines. Used
 * both for the invoice from the ledger and for its recomputation from the raw records.
 */
final class LineTotals {
  /**
   * One charge (or, negated, its void) as it counts on an invoice; {@code poolUsed} is what it took
   * from the plan's pool in ppm-ns (weighted device-ns x 10<sup>6</sup>).
   */
  record Charge(
      String model,
      String deviceClass,
      long priceVersionId,
      long priceMicrosPerSecond,
      YearMonth lateFrom,
      int requests,
      long deviceNs,
      long includedNs,
      long billableNs,
      BigInteger creditNanoMicros,
      BigInteger poolUsed) {}

  private record Key(
      String model, String deviceClass, long priceVersionId, long price, YearMonth lateFrom) {}

  private static final class Sum {
    long requests;
    long deviceNs;
    long includedNs;
    long billableNs;
    BigInteger amount = BigInteger.ZERO;
    BigInteger credits = BigInteger.ZERO;
    BigInteger pool = BigInteger.ZERO;
  }

  private static final Comparator<Key> ORDER =
      Comparator.comparing(Key::model)
          .thenComparing(Key::deviceClass)
          .thenComparingLong(Key::priceVersionId)
          .thenComparingLong(Key::price)
          .thenComparing(Key::lateFrom, Comparator.nullsFirst(Comparator.naturalOrder()));

  private final Map<Key, Sum> sums = new TreeMap<>(ORDER);

  void add(Charge c) {
    Sum s =
        sums.computeIfAbsent(
            new Key(
                c.model(),
                c.deviceClass(),
                c.priceVersionId(),
                c.priceMicrosPerSecond(),
                c.lateFrom()),
            k -> new Sum());
    s.requests += c.requests();
    s.deviceNs = Math.addExact(s.deviceNs, c.deviceNs());
    s.includedNs = Math.addExact(s.includedNs, c.includedNs());
    s.billableNs = Math.addExact(s.billableNs, c.billableNs());
    s.amount =
        s.amount.add(
            BigInteger.valueOf(c.billableNs())
                .multiply(BigInteger.valueOf(c.priceMicrosPerSecond())));
    s.credits = s.credits.add(c.creditNanoMicros());
    s.pool = s.pool.add(c.poolUsed());
  }

  List<InvoiceLine> lines() {
    List<InvoiceLine> out = new ArrayList<>(sums.size());
    for (Map.Entry<Key, Sum> e : sums.entrySet()) {
      Key k = e.getKey();
      Sum s = e.getValue();
      long amount = Money.roundToMicros(s.amount);
      long credits = Money.roundToMicros(s.credits);
      out.add(
          new InvoiceLine(
              k.model(),
              k.deviceClass(),
              k.priceVersionId(),
              k.price(),
              k.lateFrom(),
              s.requests,
              s.deviceNs,
              s.includedNs,
              s.billableNs,
              amount,
              credits,
              Math.subtractExact(amount, credits),
              s.pool));
    }
    return out;
  }

  static long total(List<InvoiceLine> lines) {
    long t = 0;
    for (InvoiceLine l : lines) {
      t = Math.addExact(t, l.dueMicros());
    }
    return t;
  }
}
