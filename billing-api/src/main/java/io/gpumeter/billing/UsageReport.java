package io.gpumeter.billing;

import java.time.Instant;
import java.util.List;

/**
 * What one API key used over whole hours.
 *
 * @param apiKeyId the key reported on; a report never includes another key's usage
 * @param from first hour included (the requested start rounded down to the hour)
 * @param to end, exclusive (the requested end rounded up to the hour)
 * @param totals sum of {@code hours}
 * @param hours per hour and model, ordered by hour then model; hours without usage are absent
 */
public record UsageReport(
    long apiKeyId, Instant from, Instant to, UsageTotals totals, List<HourlyUsage> hours) {

  public UsageReport {
    hours = List.copyOf(hours);
  }
}
