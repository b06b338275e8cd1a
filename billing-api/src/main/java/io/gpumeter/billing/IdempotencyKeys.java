package io.gpumeter.billing;

import java.time.Duration;

/**
 * Stored {@code Idempotency-Key}s (server/README.md, "Idempotent retries"): per API key, kept
 * {@link #RETENTION} from the claim, in PostgreSQL so that they survive restarts and are shared by
 * replicas. A request {@link #claim claims} its key before it generates and {@link #complete
 * stores} its answer once its charge is durable and before the answer is sent; an attempt that does
 * not succeed {@link #release releases} the key so that a retry runs again.
 *
 * <p>Every method blocks on the database: call them off event loops.
 */
public interface IdempotencyKeys {
  /** How long a key is kept after its claim; an older row counts as absent and is pruned. */
  Duration RETENTION = Duration.ofHours(24);

  /** The longest key accepted. */
  int MAX_KEY_LENGTH = 255;

  /** Whether {@code key} is 1..{@value #MAX_KEY_LENGTH} printable ASCII characters. */
  static boolean isValidKey(String key) {
    if (key == null || key.isEmpty() || key.length() > MAX_KEY_LENGTH) {
      return false;
    }
    for (int i = 0; i < key.length(); i++) {
      char ch = key.charAt(i);
      if (ch < 0x20 || ch > 0x7e) {
        return false;
      }
    }
    return true;
  }

  /**
   * Claims {@code key} for {@code requestId}, or says why not.
   *
   * @param apiKeyId the caller's API key: keys are scoped per API key
   * @param key the {@code Idempotency-Key} header (1..255 printable ASCII characters)
   * @param requestHash SHA-256 of the canonical request (32 bytes)
   * @param requestId the request id that will carry the charge if the claim is won
   * @param lease how long the claim stays {@code in_flight} before a retry may take it over (longer
   *     than any attempt can run)
   * @throws BillingException if the database cannot be reached (nothing was claimed)
   */
  IdempotencyClaim claim(
      long apiKeyId, String key, byte[] requestHash, String requestId, Duration lease);

  /**
   * Stores the answer of the attempt that holds the claim. Returns false when {@code requestId} no
   * longer holds it (a retry took it over after its lease ran out), and then nothing is stored.
   *
   * @throws BillingException if the database cannot be reached
   */
  boolean complete(long apiKeyId, String key, String requestId, int status, byte[] body);

  /**
   * Drops the claim of {@code requestId} (its attempt failed: a retry runs again). Does nothing
   * when it no longer holds the claim or the answer is already stored.
   *
   * @throws BillingException if the database cannot be reached
   */
  void release(long apiKeyId, String key, String requestId);
}
