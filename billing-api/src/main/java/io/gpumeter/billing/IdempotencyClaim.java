package io.gpumeter.billing;

/**
 * The answer to {@link IdempotencyKeys#claim}.
 *
 * @param outcome what the caller does next
 * @param requestId {@link Outcome#CLAIMED}: the caller's own; otherwise the request id that holds
 *     the key (whose answer is replayed, which is still running, or which had another body)
 * @param status the stored HTTP status ({@link Outcome#REPLAY} only, else 0)
 * @param body the stored response body ({@link Outcome#REPLAY} only, else null)
 * @param supersededRequestId {@link Outcome#CLAIMED} over a claim whose lease had run out: the
 *     request id whose charge was voided ({@link VoidReason#IDEMPOTENT_RETRY}); else null
 */
public record IdempotencyClaim(
    Outcome outcome, String requestId, int status, byte[] body, String supersededRequestId) {

  public enum Outcome {
    /** The caller holds the key: generate, then complete or release. */
    CLAIMED,
    /** An earlier attempt stored its answer: send it again. */
    REPLAY,
    /** An earlier attempt still runs (its lease has not run out): 409, retry later. */
    IN_FLIGHT,
    /** The key was used with another request body: refused. */
    MISMATCH
  }

  static IdempotencyClaim of(Outcome outcome, String requestId) {
    return new IdempotencyClaim(outcome, requestId, 0, null, null);
  }

  public static IdempotencyClaim claimed(String requestId, String supersededRequestId) {
    return new IdempotencyClaim(Outcome.CLAIMED, requestId, 0, null, supersededRequestId);
  }

  public static IdempotencyClaim replay(String requestId, int status, byte[] body) {
    return new IdempotencyClaim(Outcome.REPLAY, requestId, status, body, null);
  }

  public static IdempotencyClaim inFlight(String requestId) {
    return of(Outcome.IN_FLIGHT, requestId);
  }

  public static IdempotencyClaim mismatch(String requestId) {
    return of(Outcome.MISMATCH, requestId);
  }
}
