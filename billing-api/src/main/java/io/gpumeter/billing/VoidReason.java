package io.gpumeter.billing;

import java.util.Locale;

/**
 * Why a charge was voided: the client did not get the answer it was charged for (DESIGN.md
 * invariant 15). Stored as {@link #dbName()} in {@code charge_voids.reason} (a CHECK holds the
 * set).
 */
public enum VoidReason {
  /** The charge's durability wait failed or timed out, so the client got a 503 instead. */
  NOT_DURABLE,
  /** The client reset the connection after its generation had finished, before the answer. */
  CLIENT_GONE,
  /** Writing the answer to the connection failed. */
  WRITE_FAILED,
  /**
   * A retry with the same {@code Idempotency-Key} took over an attempt whose answer was never
   * stored (its process died, or it outlived its lease), so that attempt's answer was never sent:
   * the retry's charge is the one the client pays.
   */
  IDEMPOTENT_RETRY;

  public String dbName() {
    return name().toLowerCase(Locale.ROOT);
  }
}
