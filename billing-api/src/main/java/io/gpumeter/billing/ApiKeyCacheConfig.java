package io.gpumeter.billing;

import java.time.Duration;

/**
 * The authentication cache of {@link io.gpumeter.billing.keys.ApiKeys}.
 *
 * @param maximumSize entries kept (valid and unknown keys together)
 * @param positiveTtl how long a valid key is trusted without asking the database; also how long a
 *     key revoked on another replica may still be accepted here
 * @param negativeTtl how long an unknown key is remembered as unknown
 */
public record ApiKeyCacheConfig(long maximumSize, Duration positiveTtl, Duration negativeTtl) {

  public ApiKeyCacheConfig {
    if (maximumSize < 0) {
      throw new IllegalArgumentException("maximumSize must be >= 0, was " + maximumSize);
    }
    if (positiveTtl == null || positiveTtl.isNegative()) {
      throw new IllegalArgumentException("positiveTtl must be >= 0, was " + positiveTtl);
    }
    if (negativeTtl == null || negativeTtl.isNegative()) {
      throw new IllegalArgumentException("negativeTtl must be >= 0, was " + negativeTtl);
    }
  }

  /** 10 000 entries, valid keys for 60 s, unknown keys for 5 s. */
  public static ApiKeyCacheConfig defaults() {
    return new ApiKeyCacheConfig(10_000, Duration.ofSeconds(60), Duration.ofSeconds(5));
  }
}
