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
  WRITE_FAILED;

  public String dbName() {
    return name().toLowerCase(Locale.ROOT);
  }
}
