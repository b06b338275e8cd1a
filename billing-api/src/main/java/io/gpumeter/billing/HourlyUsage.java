package io.gpumeter.billing;

import java.time.Instant;

/**
 * One hour of one model's usage by one key.
 *
 * @param hour start of the hour, UTC
 */
public record HourlyUsage(Instant hour, String model, UsageTotals totals) {}
