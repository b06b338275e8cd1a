package io.gpumeter.metering;

/** How a request ended. Every status is charged for the steps the request took part in. */
public enum UsageStatus {
  OK,
  CANCELLED,
  TIMEOUT,
  FAILED;

  public String dbName() {
    return name().toLowerCase(java.util.Locale.ROOT);
  }
}
