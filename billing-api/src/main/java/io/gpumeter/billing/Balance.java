package io.gpumeter.billing;

import java.math.BigInteger;

/**
 * An account's prepaid balance: {@code exactNanoMicros} is the sum of all its balance entries
 * (10<sup>-9</sup> micro-units, exact); {@code micros} the same rounded by the one rule ({@code
 * pricing.Money.roundToMicros}). {@code allowanceUsedNs} and {@code allowanceIncludedNs} are the
 * plan allowance of the current UTC month (0 and 0 without a plan), in weighted device-ns of a
 * class-weighted pool (V20; used rounded up to a whole weighted device-ns).
 */
public record Balance(
    long accountId,
    String currency,
    BigInteger exactNanoMicros,
    long micros,
    long allowanceIncludedNs,
    long allowanceUsedNs) {}
