package io.gpumeter.billing;

import java.util.Map;
import java.util.Objects;

/**
 * A plan: {@code includedNs} device nanoseconds per UTC calendar month in one pool over all device
 * classes, each class using it at its weight (V20): a device-ns of a class in {@code
 * classWeightsPpm} uses weight / 1 000 000 weighted device-ns of the pool, any other class 1 000
 * 000 ppm (so a plan without weights is one unweighted pool). Where {@code
 * overagePriceMicrosPerSecond} is set, the part of a charge beyond the allowance is priced at it
 * instead of the price book (null: the price book).
 */
public record Plan(
    long id,
    String name,
    long includedNs,
    Long overagePriceMicrosPerSecond,
    Map<String, Long> classWeightsPpm) {
  /** The weight of a class that a plan does not list: one pool device-ns per device-ns. */
  public static final long UNIT_WEIGHT_PPM = 1_000_000L;

  public Plan {
    Objects.requireNonNull(name, "name");
    classWeightsPpm = Map.copyOf(classWeightsPpm);
  }

  /** An unweighted plan priced by the price book (V7's plan). */
  public Plan(long id, String name, long includedNs) {
    this(id, name, includedNs, null, Map.of());
  }

  /** The weight in parts per million at which a device-ns of {@code deviceClass} uses the pool. */
  public long weightPpm(String deviceClass) {
    return classWeightsPpm.getOrDefault(deviceClass, UNIT_WEIGHT_PPM);
  }
}
