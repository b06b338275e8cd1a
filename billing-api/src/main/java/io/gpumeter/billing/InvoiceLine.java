package io.gpumeter.billing;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.time.YearMonth;

/**
 * One invoice line: the charges of one (model, device class, price version), and of one usage month
 * when they are late ({@code lateFrom} is the month of usage that reached the ledger after its own
 * invoice was finalized; null otherwise). Device time in nanoseconds (device-seconds = ns / 1e9);
 * {@code amountMicros} = round(billable ns x unit price), {@code creditsMicros} = round(credits
 * applied), {@code dueMicros} = amount - credits. Voided charges appear negated.
 *
 * @param poolUsedPpmNs what the line's charges took from the plan's pool, in the pool's unit:
 *     weighted device-ns x 10<sup>6</sup> (ppm-ns, exact; {@link #poolUsedWeightedDeviceSeconds()}
 *     is the same in weighted device-seconds). For a class of weight w ppm it is at least {@code
 *     includedNs x w}; on an unweighted plan it is {@code includedNs x 10^6}. Null only on a line
 *     finalized before V24, which did not record it.
 */
public record InvoiceLine(
    String model,
    String deviceClass,
    long priceVersionId,
    long unitPriceMicrosPerSecond,
    YearMonth lateFrom,
    long requests,
    long deviceNs,
    long includedNs,
    long billableNs,
    long amountMicros,
    long creditsMicros,
    long dueMicros,
    BigInteger poolUsedPpmNs) {

  /** Parts per million in one weighted device-ns, times ns in a second. */
  private static final int PPM_NS_SCALE = 15;

  /**
   * A line of an unweighted pool (every class weighs 10<sup>6</sup> ppm): its pool use is {@code
   * includedNs x 10^6}.
   */
  public InvoiceLine(
      String model,
      String deviceClass,
      long priceVersionId,
      long unitPriceMicrosPerSecond,
      YearMonth lateFrom,
      long requests,
      long deviceNs,
      long includedNs,
      long billableNs,
      long amountMicros,
      long creditsMicros,
      long dueMicros) {
    this(
        model,
        deviceClass,
        priceVersionId,
        unitPriceMicrosPerSecond,
        lateFrom,
        requests,
        deviceNs,
        includedNs,
        billableNs,
        amountMicros,
        creditsMicros,
        dueMicros,
        BigInteger.valueOf(includedNs).multiply(BigInteger.valueOf(1_000_000L)));
  }

  /**
   * The pool used as an exact decimal string of weighted device-seconds (ppm-ns / 10<sup>15</sup>,
   * 15 decimals), or null when not recorded.
   */
  public String poolUsedWeightedDeviceSeconds() {
    return poolUsedPpmNs == null
        ? null
        : new BigDecimal(poolUsedPpmNs, PPM_NS_SCALE).toPlainString();
  }

  /** This line with its pool use not recorded (how a line finalized before V24 reads). */
  public InvoiceLine withoutPool() {
    return new InvoiceLine(
        model,
        deviceClass,
        priceVersionId,
        unitPriceMicrosPerSecond,
        lateFrom,
        requests,
        deviceNs,
        includedNs,
        billableNs,
        amountMicros,
        creditsMicros,
        dueMicros,
        null);
  }
}
