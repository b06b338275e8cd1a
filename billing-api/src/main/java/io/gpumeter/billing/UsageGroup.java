package io.gpumeter.billing;

/**
 * A field usage can be grouped by. {@link #SESSION_ID} is not in the hourly rollup, so grouping by
 * it reads the raw records (within the retention window), like 1-minute buckets.
 */
public enum UsageGroup {
  MODEL("model"),
  API_KEY_ID("api_key_id"),
  DEVICE("device"),
  SESSION_ID("session_id");

  private final String apiName;

  UsageGroup(String apiName) {
    this.apiName = apiName;
  }

  /** As the API spells it, also the column name in CSV. */
  public String apiName() {
    return apiName;
  }

  /**
   * The group named {@code name}.
   *
   * @throws IllegalArgumentException for any other name
   */
  public static UsageGroup parse(String name) {
    for (UsageGroup g : values()) {
      if (g.apiName.equals(name)) {
        return g;
      }
    }
    throw new IllegalArgumentException(
        "cannot group by '" + name + "'; expected model, api_key_id, device or session_id");
  }
}
