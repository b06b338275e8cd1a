package io.gpumeter.server.config;

import java.nio.file.Path;
import java.util.Objects;

/**
 * Where a setting's value came from, named in every error message about it: the built-in default, a
 * properties file, an environment variable, a system property, or code (a builder).
 */
public record ConfigSource(Kind kind, String name) {

  /** The layers, in the order they are applied (later ones win). */
  public enum Kind {
    DEFAULT,
    FILE,
    ENVIRONMENT,
    SYSTEM_PROPERTY,
    CODE
  }

  private static final ConfigSource DEFAULT = new ConfigSource(Kind.DEFAULT, "");
  private static final ConfigSource CODE = new ConfigSource(Kind.CODE, "");

  public ConfigSource {
    Objects.requireNonNull(kind, "kind");
    Objects.requireNonNull(name, "name");
  }

  public static ConfigSource defaultValue() {
    return DEFAULT;
  }

  public static ConfigSource file(Path file) {
    return new ConfigSource(Kind.FILE, file.toString());
  }

  /** {@code name} is the variable's name, e.g. {@code GPUMETER_PORT}. */
  public static ConfigSource environment(String name) {
    return new ConfigSource(Kind.ENVIRONMENT, name);
  }

  /** {@code name} is the property's name, e.g. {@code gpumeter.port}. */
  public static ConfigSource systemProperty(String name) {
    return new ConfigSource(Kind.SYSTEM_PROPERTY, name);
  }

  public static ConfigSource code() {
    return CODE;
  }

  /** As error messages say it: {@code environment variable GPUMETER_PORT}. */
  @Override
  public String toString() {
    return switch (kind) {
      case DEFAULT -> "default";
      case FILE -> "file " + name;
      case ENVIRONMENT -> "environment variable " + name;
      case SYSTEM_PROPERTY -> "system property " + name;
      case CODE -> "code";
    };
  }
}
