package io.gpumeter.billing;

import java.util.Locale;

/**
 * What an API key may read through the usage API ({@code api_keys.scope}, DESIGN.md invariant 9).
 * Every scope may run completions. No scope reaches another account.
 */
public enum KeyScope {
  /** The default: reads only its own usage. */
  INFERENCE,
  /** Reads the usage of every key of its own account. */
  ACCOUNT_ADMIN;

  /** The value stored in {@code api_keys.scope} and shown in the APIs: {@code account_admin}. */
  public String dbName() {
    return name().toLowerCase(Locale.ROOT);
  }

  /**
   * The scope named {@code name} ({@code inference} or {@code account_admin}).
   *
   * @throws IllegalArgumentException for any other name
   */
  public static KeyScope parse(String name) {
    for (KeyScope s : values()) {
      if (s.dbName().equals(name)) {
        return s;
      }
    }
    throw new IllegalArgumentException(
        "unknown key scope '" + name + "'; expected inference or account_admin");
  }
}
