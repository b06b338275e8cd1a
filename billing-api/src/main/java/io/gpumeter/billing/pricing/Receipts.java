package io.gpumeter.billing.pricing;

import io.gpumeter.billing.ChargeBreakdown;
import java.math.BigInteger;

/**
 * Builds a receipt's {@link ChargeBreakdown} with the one cost and rounding rule ({@link Money}).
 */
public final class Receipts {
  private Receipts() {}

  /**
   * The breakdown of one stored charge: the amount is {@code billableNs x unitPriceMicrosPerSecond}
   * ({@link Money#cost}), rounded by {@link Money#roundToMicros}, as are the credits.
   *
   * @throws IllegalArgumentException when the paid parts do not add up to the amount (a ledger row
   *     that breaks the deduction's rule) or a part is negative
   */
  public static ChargeBreakdown breakdown(
      long includedNs,
      BigInteger poolUsedPpmNs,
      long billableNs,
      long unitPriceMicrosPerSecond,
      BigInteger creditsNanoMicros,
      BigInteger postpaidNanoMicros,
      BigInteger overspendNanoMicros) {
    BigInteger amount = Money.cost(billableNs, unitPriceMicrosPerSecond);
    return new ChargeBreakdown(
        includedNs,
        poolUsedPpmNs,
        billableNs,
        unitPriceMicrosPerSecond,
        creditsNanoMicros,
        postpaidNanoMicros,
        overspendNanoMicros,
        amount,
        Money.roundToMicros(amount),
        Money.roundToMicros(creditsNanoMicros));
  }
}
