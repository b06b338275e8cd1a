package io.gpumeter.billing;

/**
 * Who is calling: the key that authenticated a request and its account.
 *
 * @param keyId {@code api_keys.id}; goes into {@code UsageRecord.apiKeyId}
 * @param accountId {@code accounts.id}
 * @param accountName the account's unique name
 * @param keyPrefix the first characters of the key, safe to show and log
 */
public record ApiKeyPrincipal(long keyId, long accountId, String accountName, String keyPrefix) {}
