package io.gpumeter.billing;

import java.time.Duration;

/**
 * How long raw usage records are kept and how {@link io.gpumeter.billing.retention.MaintenanceTask}
 * manages their monthly partitions. Hourly rollups ({@code usage_hourly}) are kept for good
 * whatever this says.
 *
 * @param retention raw records whose whole month ended more than this long ago are dropped; at
 *     least {@link #MINIMUM_RETENTION} (DESIGN.md: raw records are kept at least 90 days)
 * @param monthsAhead partitions created ahead of the current month (1..24)
 * @param interval how often the task runs in the background (at least a minute)
 */
public record RetentionConfig(Duration retention, int monthsAhead, Duration interval) {
  public static final Duration MINIMUM_RETENTION = Duration.ofDays(90);

  /**
   * @throws IllegalArgumentException if {@code retention} is under 90 days, or another value is out
   *     of range
   */
  public RetentionConfig {
    if (retention == null || retention.compareTo(MINIMUM_RETENTION) < 0) {
      throw new IllegalArgumentException(
          "retention must be at least 90 days (raw usage records are kept at least 90 days for"
              + " audits and disputes), was "
              + (retention == null ? "null" : retention.toDays() + " days (" + retention + ")"));
    }
    if (monthsAhead < 1 || monthsAhead > 24) {
      throw new IllegalArgumentException("monthsAhead must be in [1, 24], was " + monthsAhead);
    }
    if (interval == null || interval.compareTo(Duration.ofMinutes(1)) < 0) {
      throw new IllegalArgumentException("interval must be >= 1 minute, was " + interval);
    }
  }

  /** 90 days, 3 months ahead, hourly. */
  public static RetentionConfig defaults() {
    return new RetentionConfig(MINIMUM_RETENTION, 3, Duration.ofHours(1));
  }

  public static RetentionConfig ofDays(long days) {
    return defaults().withRetention(Duration.ofDays(days));
  }

  public RetentionConfig withRetention(Duration d) {
    return new RetentionConfig(d, monthsAhead, interval);
  }

  public RetentionConfig withMonthsAhead(int n) {
    return new RetentionConfig(retention, n, interval);
  }

  public RetentionConfig withInterval(Duration d) {
    return new RetentionConfig(retention, monthsAhead, d);
  }
}
