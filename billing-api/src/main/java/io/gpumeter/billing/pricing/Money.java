package io.gpumeter.billing.pricing;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.RoundingMode;

/**
 * The money arithmetic, in one place.
 *
 * <p>Units: a price is an integer number of micro-units (10<sup>-6</sup> of the currency) per
 * device-second. The exact cost of {@code device_ns} at that price is {@code device_ns x price}
 * nano-micro-units (10<sup>-9</sup> micro-units, 10<sup>-15</sup> of the currency), an integer that
 * is never rounded and can exceed a {@code long} (it is a {@link BigInteger} here and {@code
 * numeric(38,0)} in PostgreSQL). Rounding to micro-units happens once, in {@link #roundToMicros},
 * half-even: per invoice line, for a balance shown in micro-units, and for a receipt beside the
 * exact figure. SQL never rounds money.
 */
public final class Money {
  /** Nano-micro-units in one micro-unit. */
  public static final BigInteger NANO_MICROS_PER_MICRO = BigInteger.valueOf(1_000_000_000L);

  private static final BigDecimal DIVISOR = new BigDecimal(NANO_MICROS_PER_MICRO);

  private Money() {}

  /**
   * The exact cost of {@code deviceNs} nanoseconds at {@code priceMicrosPerSecond}, in
   * nano-micro-units.
   *
   * @throws IllegalArgumentException if either is negative
   */
  public static BigInteger cost(long deviceNs, long priceMicrosPerSecond) {
    if (deviceNs < 0 || priceMicrosPerSecond < 0) {
      throw new IllegalArgumentException(
          "device time and price must be >= 0, were " + deviceNs + " and " + priceMicrosPerSecond);
    }
    return BigInteger.valueOf(deviceNs).multiply(BigInteger.valueOf(priceMicrosPerSecond));
  }

  /**
   * THE rounding rule: nano-micro-units to micro-units, half to even.
   *
   * @throws ArithmeticException if the result does not fit a {@code long}
   */
  public static long roundToMicros(BigInteger nanoMicros) {
    return new BigDecimal(nanoMicros)
        .divide(DIVISOR, 0, RoundingMode.HALF_EVEN)
        .toBigIntegerExact()
        .longValueExact();
  }

  /** Micro-units to nano-micro-units (exact). */
  public static BigInteger nanoMicros(long micros) {
    return BigInteger.valueOf(micros).multiply(NANO_MICROS_PER_MICRO);
  }

  /** Micro-units as a decimal string of currency units with six decimals: 1234567 to "1.234567". */
  public static String decimal(long micros) {
    return BigDecimal.valueOf(micros, 6).toPlainString();
  }

  /** Nano-micro-units as an exact decimal string of currency units (15 decimals). */
  public static String exactDecimal(BigInteger nanoMicros) {
    return new BigDecimal(nanoMicros, 15).toPlainString();
  }
}
