package io.gpumeter.billing;

import java.math.BigInteger;
import java.time.Instant;

/**
 * One result of a bucketed cost query: the priced cost of one group's charges in one bucket. The
 * group fields not grouped by are null. Only groups with at least one priced, not voided charge
 * appear.
 *
 * @param bucket the bucket's start
 * @param model the model, when grouped by it
 * @param apiKeyId the key, when grouped by it
 * @param device the device, when grouped by it
 * @param sessionId the session, when grouped by it
 * @param requests priced charges in the result
 * @param exactNanoMicros the sum of their exact costs ({@code charge_prices.cost_nmicros}),
 *     10<sup>-9</sup> micro-units, unrounded
 * @param micros {@code exactNanoMicros} rounded once by the one rule ({@code
 *     pricing.Money.roundToMicros}, half-even)
 * @param currency the account's currency (ISO 4217, upper case)
 */
public record CostBucketRow(
    Instant bucket,
    String model,
    Long apiKeyId,
    String device,
    String sessionId,
    long requests,
    BigInteger exactNanoMicros,
    long micros,
    String currency) {}
