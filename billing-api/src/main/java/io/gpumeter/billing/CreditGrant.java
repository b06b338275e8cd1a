package io.gpumeter.billing;

import java.math.BigInteger;
import java.time.Instant;

/**
 * Prepaid credit: {@code source} is {@code grant} or {@code topup}; {@code amountMicros} as
 * granted; {@code remainingNanoMicros} what is left (the exact sum of its balance entries, in
 * 10<sup>-9</sup> micro-units); {@code expiresAt} null means it never expires.
 */
public record CreditGrant(
    long id,
    long accountId,
    String source,
    long amountMicros,
    BigInteger remainingNanoMicros,
    Instant expiresAt,
    Instant grantedAt,
    String note) {}
