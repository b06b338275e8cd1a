package io.gpumeter.billing;

import java.time.Duration;
import java.time.Instant;

/** The width of a usage bucket: whole UTC minutes, hours or days. */
public enum BucketWidth {
  MINUTE("1m", 60, "minute"),
  HOUR("1h", 3_600, "hour"),
  DAY("1d", 86_400, "day");

  private final String apiName;
  private final long seconds;
  private final String sqlUnit;

  BucketWidth(String apiName, long seconds, String sqlUnit) {
    this.apiName = apiName;
    this.seconds = seconds;
    this.sqlUnit = sqlUnit;
  }

  /** As the API spells it: {@code 1m}, {@code 1h}, {@code 1d}. */
  public String apiName() {
    return apiName;
  }

  public long seconds() {
    return seconds;
  }

  public Duration duration() {
    return Duration.ofSeconds(seconds);
  }

  /** The unit of PostgreSQL's {@code date_trunc}: minute, hour, day. */
  public String sqlUnit() {
    return sqlUnit;
  }

  /** The start of the bucket holding {@code epochSecond} (UTC; floor, also before 1970). */
  public long floor(long epochSecond) {
    return Math.floorDiv(epochSecond, seconds) * seconds;
  }

  /** The smallest bucket boundary at or after {@code epochSecond}. */
  public long ceil(long epochSecond) {
    return -Math.floorDiv(-epochSecond, seconds) * seconds;
  }

  public boolean isBoundary(Instant t) {
    return t.getNano() == 0 && floor(t.getEpochSecond()) == t.getEpochSecond();
  }

  /**
   * The width named {@code name} ({@code 1m}, {@code 1h} or {@code 1d}).
   *
   * @throws IllegalArgumentException for any other name
   */
  public static BucketWidth parse(String name) {
    for (BucketWidth w : values()) {
      if (w.apiName.equals(name)) {
        return w;
      }
    }
    throw new IllegalArgumentException("bucket width must be 1m, 1h or 1d");
  }
}
