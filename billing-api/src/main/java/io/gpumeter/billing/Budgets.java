package io.gpumeter.billing;

import java.util.concurrent.CompletableFuture;

/**
 * Budgets enforced before the work (docs/DESIGN.md, "Budgets"): admission reserves an estimate of a
 * request's cost against the account's funds, each step may extend it, and the recorded charge
 * settles it. Implemented by {@code budget.LeasedBudgets}: each replica leases slices of an
 * account's funds from PostgreSQL and reserves against them in memory.
 */
public interface Budgets {

  /**
   * The price key of one served model: its name and the device it runs on (the device class is
   * derived from them the way charges are priced). Made once per model; reused for every request.
   */
  Meter meter(String model, String device, String deviceName);

  /**
   * Admission: reserves {@code estimateNs} of device time for a request of {@code accountId} on
   * {@code meter}. Completes at once when this replica's lease covers it (no database round trip);
   * otherwise after the lease was renewed on the budget thread.
   *
   * @return completes with the reservation, or exceptionally with {@link
   *     InsufficientQuotaException} (suspended, or the funds cannot cover the estimate) or {@link
   *     BillingException} (no valid lease and the database cannot be reached)
   */
  CompletableFuture<Reservation> reserve(Meter meter, long accountId, long estimateNs);

  /**
   * A served model's price key and its recent device cost per token; see {@link #meter}. The
   * estimate starts at {@link #DEFAULT_NS_PER_TOKEN} and follows the model's charged steps: a step
   * costlier per token than the estimate raises it at once, a cheaper one lowers it by an eighth of
   * the difference (quick to become more careful, slow to become less).
   */
  interface Meter {
    /** Before any step was measured: 5 ms of device time per token (conservative on purpose). */
    long DEFAULT_NS_PER_TOKEN = 5_000_000;

    String model();

    /**
     * Feeds one charged step: {@code measuredNs} for {@code tokens} tokens. Called by one thread
     * (the model's scheduler); never blocks.
     */
    void observeStep(long measuredNs, int tokens);

    /** The recent device-ns per token. */
    long nsPerToken();
  }

  /** One request's reservation. Thread-safe; settle once. */
  interface Reservation {
    /**
     * Per step: true while the reservation (extended from the lease if it must be) covers {@code
     * usedNs + nextStepNs}; false when the account ran dry. Never blocks.
     */
    boolean mayStep(long usedNs, long nextStepNs);

    /**
     * The request's charge of {@code chargedNs} is recorded (0: nothing was charged): the
     * reservation is released and the charge counted against the lease. Idempotent.
     */
    void settle(long chargedNs);

    /**
     * The price the reservation was made at: micro-units of {@link #currency()} per device-second
     * (the price version current at admission); -1 when the request is not charged in money (no
     * price for the account's currency).
     */
    default long priceMicrosPerSecond() {
      return -1;
    }

    /** The account's currency (ISO 4217), or null when not known. */
    default String currency() {
      return null;
    }
  }
}
