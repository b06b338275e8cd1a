package io.gpumeter.billing;

import java.util.Objects;

/**
 * Who is calling: the key that authenticated a request and its account.
 *
 * @param keyId {@code api_keys.id}; goes into {@code UsageRecord.apiKeyId}
 * @param accountId {@code accounts.id}
 * @param accountName the account's unique name
 * @param keyPrefix the first characters of the key, safe to show and log
 * @param scope what the key may read through the usage API
 */
public record ApiKeyPrincipal(
    long keyId, long accountId, String accountName, String keyPrefix, KeyScope scope) {

  /** An {@link KeyScope#INFERENCE} key. */
  public ApiKeyPrincipal(long keyId, long accountId, String accountName, String keyPrefix) {
    this(keyId, accountId, accountName, keyPrefix, KeyScope.INFERENCE);
  }

  public ApiKeyPrincipal {
    Objects.requireNonNull(scope, "scope");
  }
}
