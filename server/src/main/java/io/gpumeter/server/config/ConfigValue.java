package io.gpumeter.server.config;

import java.util.Objects;

/** One setting's raw text as the winning layer gave it, and that layer. */
public record ConfigValue(String key, String text, ConfigSource source) {
  public ConfigValue {
    Objects.requireNonNull(key, "key");
    Objects.requireNonNull(text, key);
    Objects.requireNonNull(source, "source");
  }
}
