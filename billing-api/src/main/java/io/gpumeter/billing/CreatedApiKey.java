package io.gpumeter.billing;

import java.time.Instant;

/**
 * A key just created by {@link io.gpumeter.billing.keys.ApiKeys#create}. The only place the
 * plaintext ever appears: the database keeps its SHA-256 hash and {@link #prefix()}. {@link
 * #toString()} leaves it out.
 *
 * @param plaintext the key to hand to the user, {@code gm_} followed by 40 base62 characters
 * @param scope what the key may read through the usage API
 * @param label the operator's name for the key, or null (migration V13)
 */
public record CreatedApiKey(
    long keyId,
    long accountId,
    String accountName,
    String prefix,
    String plaintext,
    Instant createdAt,
    KeyScope scope,
    String label) {

  /** A key without a label. */
  public CreatedApiKey(
      long keyId,
      long accountId,
      String accountName,
      String prefix,
      String plaintext,
      Instant createdAt,
      KeyScope scope) {
    this(keyId, accountId, accountName, prefix, plaintext, createdAt, scope, null);
  }

  /** An {@link KeyScope#INFERENCE} key. */
  public CreatedApiKey(
      long keyId,
      long accountId,
      String accountName,
      String prefix,
      String plaintext,
      Instant createdAt) {
    this(keyId, accountId, accountName, prefix, plaintext, createdAt, KeyScope.INFERENCE);
  }

  public ApiKeyPrincipal principal() {
    return new ApiKeyPrincipal(keyId, accountId, accountName, prefix, scope);
  }

  @Override
  public String toString() {
    return "CreatedApiKey[keyId="
        + keyId
        + ", accountId="
        + accountId
        + ", accountName="
        + accountName
        + ", prefix="
        + prefix
        + ", createdAt="
        + createdAt
        + ", scope="
        + scope
        + ", label="
        + label
        + "]";
  }
}
