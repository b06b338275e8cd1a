package io.gpumeter.billing;

import java.time.Instant;

/**
 * One effective-dated price: micro-units of {@code currency} per device-second for {@code model}
 * ({@code *} for every model of the class) on {@code deviceClass}, valid on {@code [from, to)};
 * {@code to} null means open-ended.
 */
public record PriceVersion(
    long id,
    String model,
    String deviceClass,
    String currency,
    long priceMicrosPerSecond,
    Instant from,
    Instant to) {}
