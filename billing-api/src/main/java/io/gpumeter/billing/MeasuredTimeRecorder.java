package io.gpumeter.billing;

/**
 * Where the server records device time as the scheduler measured it, per model and device and per
 * minute of the billing clock; reconciliation compares it with the ledger. Returned by {@link
 * Billing#measuredTime()}. Implementations are thread-safe and do not block on the database.
 */
public interface MeasuredTimeRecorder {

  /**
   * Adds deltas for {@code model} on {@code device} in the current minute.
   *
   * @param measuredNs device time measured (charged + system)
   * @param chargedNs part of it handed out to requests as shares
   * @param systemNs part of it not charged to any request (load, warm-up)
   * @param steps steps measured
   * @throws IllegalArgumentException if a delta is negative
   */
  void record(
      String model, String device, long measuredNs, long chargedNs, long systemNs, long steps);
}
