package io.gpumeter.server.config;

import java.io.IOException;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Properties;

/**
 * The one way settings are read: layers applied in order, each overriding the ones before.
 *
 * <ol>
 *   <li>the built-in defaults (the map given to {@link #withDefaults});
 *   <li>an optional properties file: keys as in the defaults, optionally with the {@code gpumeter.}
 *       prefix; an unknown key is refused, since a typo would otherwise be ignored;
 *   <li>environment variables: key {@code a.b_c} is {@code GPUMETER_A_B_C};
 *   <li>system properties: key {@code a.b_c} is {@code gpumeter.a.b_c}.
 * </ol>
 *
 * <p>Environment variables and system properties are looked up by known key only, so others with
 * the same prefix (used by other parts of the process) are ignored. A blank value in any layer
 * unsets the key: it returns to its built-in default (for an optional setting, unset), so an empty
 * {@code GPUMETER_DB_URL=} undoes a {@code db.url} from the file. Values are kept as text with
 * their source; {@link ConfigValues} parses them with one set of rules.
 *
 * <p>Not thread-safe: fill it on one thread, then take {@link #values()}.
 */
public final class ConfigLoader {
  /** Prefix of the environment variables: {@code GPUMETER_}. */
  public static final String ENV_PREFIX = "GPUMETER_";

  /** Prefix of the system properties (and optional prefix in the file): {@code gpumeter.}. */
  public static final String PROPERTY_PREFIX = "gpumeter.";

  private final Map<String, String> defaults;
  private final Map<String, ConfigValue> values = new LinkedHashMap<>();

  private ConfigLoader(Map<String, String> defaults) {
    this.defaults = Collections.unmodifiableMap(new LinkedHashMap<>(defaults));
    this.defaults.forEach(
        (k, d) -> values.put(k, new ConfigValue(k, d, ConfigSource.defaultValue())));
  }

  /** Starts from {@code defaults}: every known key and its default text (blank: unset). */
  public static ConfigLoader withDefaults(Map<String, String> defaults) {
    return new ConfigLoader(Objects.requireNonNull(defaults, "defaults"));
  }

  /**
   * The four layers at once: {@code defaults}, then {@code file} (if not null), then {@code env},
   * then {@code systemProperties}.
   *
   * @throws IllegalArgumentException for an unknown key in the file
   * @throws IOException if the file cannot be read
   */
  public static ConfigValues load(
      Map<String, String> defaults, Path file, Map<String, String> env, Properties systemProperties)
      throws IOException {
    return withDefaults(defaults)
        .file(file)
        .environment(env)
        .systemProperties(systemProperties)
        .values();
  }

  /**
   * Applies a properties file (UTF-8); does nothing when {@code file} is null.
   *
   * @throws IllegalArgumentException naming the file for an unknown key
   * @throws IOException if the file cannot be read
   */
  public ConfigLoader file(Path file) throws IOException {
    if (file == null) {
      return this;
    }
    Properties p = new Properties();
    try (Reader r = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
      p.load(r);
    }
    for (String name : p.stringPropertyNames()) {
      String key =
          name.startsWith(PROPERTY_PREFIX) ? name.substring(PROPERTY_PREFIX.length()) : name;
      if (!defaults.containsKey(key)) {
        throw new IllegalArgumentException(
            "unknown setting '" + name + "' in " + file + "; known settings: " + defaults.keySet());
      }
      set(key, p.getProperty(name), ConfigSource.file(file));
    }
    return this;
  }

  /** Applies the {@code GPUMETER_*} variables of known keys; pass {@code System.getenv()}. */
  public ConfigLoader environment(Map<String, String> env) {
    for (String key : defaults.keySet()) {
      String name = envName(key);
      String value = env.get(name);
      if (value != null) {
        set(key, value, ConfigSource.environment(name));
      }
    }
    return this;
  }

  /**
   * Applies the {@code gpumeter.*} properties of known keys; pass {@code System.getProperties()}.
   */
  public ConfigLoader systemProperties(Properties properties) {
    for (String key : defaults.keySet()) {
      String name = propertyName(key);
      String value = properties.getProperty(name);
      if (value != null) {
        set(key, value, ConfigSource.systemProperty(name));
      }
    }
    return this;
  }

  /**
   * Sets one key's raw text; a blank {@code value} returns the key to its default.
   *
   * @throws IllegalArgumentException if {@code key} is not a known key
   */
  public ConfigLoader set(String key, String value, ConfigSource source) {
    String d = defaults.get(key);
    if (d == null) {
      throw new IllegalArgumentException(
          "unknown setting '" + key + "'; known: " + defaults.keySet());
    }
    Objects.requireNonNull(value, key);
    values.put(key, new ConfigValue(key, value.isBlank() ? d : value, source));
    return this;
  }

  /** The values as they stand now, to parse. */
  public ConfigValues values() {
    return new ConfigValues(values);
  }

  /** {@code models.dir} becomes {@code GPUMETER_MODELS_DIR}. */
  public static String envName(String key) {
    return ENV_PREFIX + key.toUpperCase(Locale.ROOT).replace('.', '_');
  }

  /** {@code models.dir} becomes {@code gpumeter.models.dir}. */
  public static String propertyName(String key) {
    return PROPERTY_PREFIX + key;
  }
}
