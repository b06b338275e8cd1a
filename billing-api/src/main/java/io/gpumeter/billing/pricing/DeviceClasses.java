package io.gpumeter.billing.pricing;

import java.util.Locale;
import java.util.StringJoiner;
import java.util.regex.Pattern;

/**
 * The Java twin of the SQL function {@code device_class(device, device_name)} (V7, replaced by
 * V15), for pricing a receipt before its charge is stored: {@code cpu} and a CPU replica's {@code
 * cpu:N} are {@code cpu}; an accelerator's name is lower-cased, split on anything that is not an
 * ASCII letter or digit, memory-type tokens ({@code hbm}, {@code hbm2}, {@code hbm2e}, {@code
 * hbm3}, {@code hbm3e}) dropped and joined with {@code -}; an empty result falls back to the
 * lower-cased device. {@code DeviceClassesTest} runs both on the same inputs against PostgreSQL.
 */
public final class DeviceClasses {
  private static final Pattern SPLIT = Pattern.compile("[^a-z0-9]+");
  private static final Pattern MEMORY = Pattern.compile("hbm[0-9]*e?");
  private static final Pattern CPU_REPLICA = Pattern.compile("cpu:[0-9]+");

  private DeviceClasses() {}

  /** The device class, or null when either argument is null (the SQL function is STRICT). */
  public static String of(String device, String deviceName) {
    if (device == null || deviceName == null) {
      return null;
    }
    if (device.equals("cpu") || CPU_REPLICA.matcher(device).matches()) {
      return "cpu";
    }
    StringJoiner j = new StringJoiner("-");
    for (String t : SPLIT.split(deviceName.toLowerCase(Locale.ROOT))) {
      if (!t.isEmpty() && !MEMORY.matcher(t).matches()) {
        j.add(t);
      }
    }
    String cls = j.toString();
    return cls.isEmpty() ? device.toLowerCase(Locale.ROOT) : cls;
  }
}
