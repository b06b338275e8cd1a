package io.gpumeter.billing;

import java.math.BigInteger;

/**
 * The priced cost of one stored charge: {@code exactNanoMicros} = device_ns x unit price, in
 * 10<sup>-9</sup> micro-units of {@code currency}, unrounded; {@code roundedMicros} the same by the
 * one rounding rule (a receipt shows both; invoices round per line, not per request); the price
 * version it was priced with and that version's unit price.
 */
public record ChargeCost(
    String requestId,
    long deviceNs,
    BigInteger exactNanoMicros,
    long roundedMicros,
    String currency,
    long priceVersionId,
    long priceMicrosPerSecond) {}
