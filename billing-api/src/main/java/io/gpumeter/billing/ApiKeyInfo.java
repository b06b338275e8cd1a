package io.gpumeter.billing;

import java.time.Instant;

/**
 * What may be shown about an API key: never its secret (only the hash is stored), only its first
 * characters.
 *
 * @param keyId {@code api_keys.id}
 * @param accountId {@code accounts.id}
 * @param accountName the account's unique name
 * @param prefix the first {@value io.gpumeter.billing.keys.ApiKeys#PREFIX_LENGTH} characters of the
 *     key
 * @param createdAt when it was created
 * @param revokedAt when it was revoked, or null while it is valid
 * @param scope what the key may read through the usage API
 * @param label the operator's name for the key, or null when it has none (migration V13)
 */
public record ApiKeyInfo(
    long keyId,
    long accountId,
    String accountName,
    String prefix,
    Instant createdAt,
    Instant revokedAt,
    KeyScope scope,
    String label) {

  /** A key without a label. */
  public ApiKeyInfo(
      long keyId,
      long accountId,
      String accountName,
      String prefix,
      Instant createdAt,
      Instant revokedAt,
      KeyScope scope) {
    this(keyId, accountId, accountName, prefix, createdAt, revokedAt, scope, null);
  }

  /** An {@link KeyScope#INFERENCE} key. */
  public ApiKeyInfo(
      long keyId,
      long accountId,
      String accountName,
      String prefix,
      Instant createdAt,
      Instant revokedAt) {
    this(keyId, accountId, accountName, prefix, createdAt, revokedAt, KeyScope.INFERENCE);
  }

  public boolean revoked() {
    return revokedAt != null;
  }
}
