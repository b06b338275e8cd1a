package io.gpumeter.server.config;

import java.time.Duration;
import java.time.format.DateTimeParseException;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.function.Function;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Settings as text with their sources (from {@link ConfigLoader}), and the one set of rules that
 * parses them. Every typed read refuses a bad value with an {@link IllegalArgumentException} whose
 * message names the key, the value and its source, e.g. {@code invalid setting port='70000' (from
 * environment variable GPUMETER_PORT): must be in [0, 65535]}.
 *
 * <p>Rules (surrounding whitespace is ignored everywhere):
 *
 * <ul>
 *   <li>blank: unset ({@link #optional} gives null; {@link ConfigLoader} has already put the
 *       default back);
 *   <li>integers: decimal, within the range the setting allows;
 *   <li>byte sizes: a number of bytes, or with a suffix in powers of 1024: {@code k}/{@code KiB},
 *       {@code m}/{@code MiB}, {@code g}/{@code GiB}, {@code t}/{@code TiB} (case-insensitive;
 *       {@code 64MiB}, {@code 512m}, {@code 1g});
 *   <li>durations: {@code 300s}, {@code 2ms}, {@code 500us}, {@code 10ns}, {@code 5m}, {@code 1h},
 *       a bare number of milliseconds, or ISO-8601 ({@code PT5M});
 *   <li>booleans: {@code true}/{@code false}, {@code yes}/{@code no}, {@code on}/{@code off}
 *       (case-insensitive).
 * </ul>
 */
public final class ConfigValues {
  private static final Pattern SIZE =
      Pattern.compile("(\\d+)\\s*(b|k|kib|m|mib|g|gib|t|tib)?", Pattern.CASE_INSENSITIVE);
  private static final Pattern DURATION =
      Pattern.compile("(\\d+)\\s*(ns|us|ms|s|m|h)?", Pattern.CASE_INSENSITIVE);

  private final Map<String, ConfigValue> values;

  ConfigValues(Map<String, ConfigValue> values) {
    this.values = Collections.unmodifiableMap(new LinkedHashMap<>(values));
  }

  /**
   * The raw value of {@code key}.
   *
   * @throws IllegalArgumentException if {@code key} is not a known key
   */
  public ConfigValue get(String key) {
    ConfigValue v = values.get(key);
    if (v == null) {
      throw new IllegalArgumentException("unknown setting '" + key + "'");
    }
    return v;
  }

  /** Every known key with its value, in the order of the defaults. */
  public Map<String, ConfigValue> asMap() {
    return values;
  }

  /** The trimmed text of {@code key}. */
  public String text(String key) {
    return get(key).text().trim();
  }

  /** The trimmed text of {@code key}, or null when it is unset (blank). */
  public String optional(String key) {
    return blankToNull(get(key).text());
  }

  /** A whole number in {@code [min, max]}. */
  public int intIn(String key, int min, int max) {
    return (int) longIn(key, min, max);
  }

  /** A whole number in {@code [min, max]}. */
  public long longIn(String key, long min, long max) {
    long n;
    try {
      n = Long.parseLong(text(key));
    } catch (NumberFormatException e) {
      throw invalid(key, "not an integer");
    }
    if (n < min || n > max) {
      throw invalid(key, "must be in [" + min + ", " + max + "]");
    }
    return n;
  }

  /** A byte size (see {@link #parseBytes}) of at least {@code min} bytes. */
  public long bytes(String key, long min) {
    long n;
    try {
      n = parseBytes(text(key));
    } catch (IllegalArgumentException e) {
      throw invalid(key, "not a size (examples: 1073741824, 512m, 64MiB, 1g)");
    }
    if (n < min) {
      throw invalid(key, "must be at least " + min + " bytes");
    }
    return n;
  }

  /** A duration (see {@link #parseDuration}) of at least {@code min}. */
  public Duration duration(String key, Duration min) {
    Duration d;
    try {
      d = parseDuration(text(key));
    } catch (IllegalArgumentException | ArithmeticException e) {
      throw invalid(key, "not a duration (examples: 300s, 2ms, 5m, PT5M)");
    }
    if (d.compareTo(min) < 0) {
      throw invalid(key, "must be at least " + min);
    }
    return d;
  }

  /** A boolean (see {@link #parseBoolean}). */
  public boolean bool(String key) {
    try {
      return parseBoolean(text(key));
    } catch (IllegalArgumentException e) {
      throw invalid(key, "not a boolean (true/false, yes/no, on/off)");
    }
  }

  /**
   * The trimmed text through {@code parse}; a {@link RuntimeException} from it becomes an {@link
   * #invalid} error with its message as the reason.
   */
  public <T> T parse(String key, Function<String, T> parse) {
    try {
      return parse.apply(text(key));
    } catch (RuntimeException e) {
      throw invalid(key, e.getMessage());
    }
  }

  /** The error for a bad value of {@code key}: key, value, source, and {@code why}. */
  public IllegalArgumentException invalid(String key, String why) {
    ConfigValue v = get(key);
    return new IllegalArgumentException(
        "invalid setting " + key + "='" + v.text() + "' (from " + v.source() + "): " + why);
  }

  /** As {@link #invalid}, for a secret: the message names key and source, never the value. */
  public IllegalArgumentException invalidSecret(String key, String why) {
    return new IllegalArgumentException(
        "invalid setting " + key + " (from " + get(key).source() + "): " + why);
  }

  // ---------------------------------------------------------------- the rules, on plain text

  /** Null for null or blank text, else the text trimmed. */
  public static String blankToNull(String s) {
    return s == null || s.isBlank() ? null : s.trim();
  }

  /**
   * Bytes, optionally with a suffix in powers of 1024: {@code b}, {@code k}/{@code KiB}, {@code
   * m}/{@code MiB}, {@code g}/{@code GiB}, {@code t}/{@code TiB}, case-insensitive.
   *
   * @throws IllegalArgumentException if {@code text} is not such a size or overflows a long
   */
  public static long parseBytes(String text) {
    Matcher m = SIZE.matcher(text.trim());
    if (!m.matches()) {
      throw new IllegalArgumentException("not a size: " + text);
    }
    String unit = m.group(2) == null ? "" : m.group(2).toLowerCase(Locale.ROOT);
    int shift =
        switch (unit.isEmpty() ? ' ' : unit.charAt(0)) {
          case 'k' -> 10;
          case 'm' -> 20;
          case 'g' -> 30;
          case 't' -> 40;
          default -> 0;
        };
    try {
      return Math.multiplyExact(Long.parseLong(m.group(1)), 1L << shift);
    } catch (NumberFormatException | ArithmeticException e) {
      throw new IllegalArgumentException("size out of range: " + text, e);
    }
  }

  /**
   * {@code 300s}, {@code 2ms}, {@code 500us}, {@code 10ns}, {@code 5m}, {@code 1h}, a bare number
   * of milliseconds, or ISO-8601 ({@code PT5M}); case-insensitive.
   *
   * @throws IllegalArgumentException if {@code text} is not such a duration or overflows
   */
  public static Duration parseDuration(String text) {
    String s = text.trim().toLowerCase(Locale.ROOT);
    try {
      if (s.startsWith("p")) {
        return Duration.parse(s.toUpperCase(Locale.ROOT));
      }
      Matcher m = DURATION.matcher(s);
      if (!m.matches()) {
        throw new IllegalArgumentException("not a duration: " + text);
      }
      long n = Long.parseLong(m.group(1));
      String unit = m.group(2) == null ? "ms" : m.group(2);
      return switch (unit) {
        case "ns" -> Duration.ofNanos(n);
        case "us" -> Duration.ofNanos(Math.multiplyExact(n, 1000L));
        case "ms" -> Duration.ofMillis(n);
        case "s" -> Duration.ofSeconds(n);
        case "m" -> Duration.ofMinutes(n);
        case "h" -> Duration.ofHours(n);
        default -> throw new IllegalArgumentException("unknown unit: " + unit);
      };
    } catch (DateTimeParseException | NumberFormatException | ArithmeticException e) {
      throw new IllegalArgumentException("not a duration: " + text, e);
    }
  }

  /**
   * {@code true}, {@code yes}, {@code on} or {@code false}, {@code no}, {@code off},
   * case-insensitive.
   *
   * @throws IllegalArgumentException for anything else
   */
  public static boolean parseBoolean(String text) {
    return switch (text.trim().toLowerCase(Locale.ROOT)) {
      case "true", "yes", "on" -> true;
      case "false", "no", "off" -> false;
      default -> throw new IllegalArgumentException("not a boolean: " + text);
    };
  }
}
