package io.gpumeter.billing;

/**
 * The result of a rotation: a new key for the same account, and the old key, revoked in the same
 * transaction.
 *
 * @param created the new key; its plaintext is shown only here
 * @param revoked the old key as it is now (revoked)
 */
public record RotatedApiKey(CreatedApiKey created, ApiKeyInfo revoked) {}
