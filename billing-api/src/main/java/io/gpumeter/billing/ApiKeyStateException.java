package io.gpumeter.billing;

/**
 * A key operation refused because of the key's state: no key has the id, or it is already revoked.
 * An expected outcome (404 / 409 in the admin API), not a database failure ({@link
 * BillingException}).
 */
public final class ApiKeyStateException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  /** Why the operation was refused. */
  public enum Problem {
    /** No key has this id. */
    UNKNOWN,
    /** The key was revoked before. */
    REVOKED
  }

  private final long keyId;
  private final Problem problem;

  public ApiKeyStateException(long keyId, Problem problem) {
    super(
        problem == Problem.UNKNOWN
            ? "no API key has id " + keyId
            : "API key " + keyId + " is already revoked");
    this.keyId = keyId;
    this.problem = problem;
  }

  public long keyId() {
    return keyId;
  }

  public Problem problem() {
    return problem;
  }
}
