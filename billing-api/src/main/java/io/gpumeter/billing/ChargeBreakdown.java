package io.gpumeter.billing;

import java.math.BigInteger;

/**
 * How one stored charge was paid: what the account really pays for the request, as the ledger
 * deducted it ({@code charge_deductions}, kind {@code charge}; DESIGN.md "Money", "Receipts").
 * Beside a receipt's list cost (device ns x the price-book price of its version), this says how
 * much of the device time the plan's allowance covered, the price the rest was billed at (the
 * plan's overage price where it sets one, else the price book's) and who paid that amount: credits,
 * postpaid, or nobody (bounded overspend).
 *
 * <p>The amounts are exact nano-micro-units; the micro-unit figures are rounded by the one rule
 * ({@code pricing.Money#roundToMicros}) exactly as an invoice line rounds: {@code amountMicros} =
 * round( amount), {@code creditsMicros} = round(credits), {@code dueMicros} = amount - credits. So
 * a line's figures are the rounded sums of its requests' exact figures, never a sum of rounded
 * ones. Build one with {@code pricing.Receipts.breakdown}, which computes the amount and rounds it
 * (this API type depends on no billing subpackage: ArchitectureTest).
 *
 * @param includedNs device ns the plan's allowance covered
 * @param poolUsedPpmNs what the charge took from the plan's pool, in ppm-ns (weighted device-ns x
 *     10<sup>6</sup>)
 * @param billableNs device ns beyond the allowance ({@code includedNs + billableNs} = the record's
 *     device time)
 * @param unitPriceMicrosPerSecond the price {@code billableNs} was billed at
 * @param creditsNanoMicros paid from prepaid credits
 * @param postpaidNanoMicros owed as postpaid overage
 * @param overspendNanoMicros paid by nobody (the bounded overspend of invariant 22)
 * @param amountNanoMicros {@code billableNs x unitPriceMicrosPerSecond}, exact nano-micro-units
 * @param amountMicros the amount rounded by the one rule
 * @param creditsMicros the credits applied rounded by the one rule
 */
public record ChargeBreakdown(
    long includedNs,
    BigInteger poolUsedPpmNs,
    long billableNs,
    long unitPriceMicrosPerSecond,
    BigInteger creditsNanoMicros,
    BigInteger postpaidNanoMicros,
    BigInteger overspendNanoMicros,
    BigInteger amountNanoMicros,
    long amountMicros,
    long creditsMicros) {

  /**
   * @throws IllegalArgumentException when the paid parts do not add up to {@code billableNs x
   *     unitPriceMicrosPerSecond} (a ledger row that breaks the deduction's rule)
   */
  public ChargeBreakdown {
    BigInteger amount = amountNanoMicros;
    if (includedNs < 0
        || poolUsedPpmNs.signum() < 0
        || !creditsNanoMicros.add(postpaidNanoMicros).add(overspendNanoMicros).equals(amount)) {
      throw new IllegalArgumentException(
          "a deduction's parts must be non-negative and add up to billable x price = "
              + amount
              + "; were included "
              + includedNs
              + ", pool "
              + poolUsedPpmNs
              + ", credits "
              + creditsNanoMicros
              + ", postpaid "
              + postpaidNanoMicros
              + ", overspend "
              + overspendNanoMicros);
    }
  }

  /** What is left to pay after credits: {@code amountMicros - creditsMicros}, as on an invoice. */
  public long dueMicros() {
    return Math.subtractExact(amountMicros(), creditsMicros());
  }
}
