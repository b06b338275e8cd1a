package io.gpumeter.metering;

import java.util.Objects;

/**
 * What one measured step of device time was, and where every nanosecond of it went: the one record
 * from which the counters, the reconciliation feed and the usage records are all fed, so that
 * nobody adds up shares a second time.
 *
 * <p>Two kinds:
 *
 * <ul>
 *   <li>{@link Kind#CHARGED}: a scheduler step. Its measured time is split by the {@link
 *       Apportioner} into one share per sequence; {@code chargedNs} is their sum and equals {@code
 *       measuredNs}; {@code systemNs} is zero.
 *   <li>{@link Kind#SYSTEM}: model load or a warm-up pass, measured with the same timer but charged
 *       to nobody: no sequences, {@code chargedNs} zero, {@code systemNs == measuredNs}.
 * </ul>
 *
 * <p>In both, {@code measuredNs == chargedNs + systemNs}.
 *
 * <p><b>Lifetime:</b> the scheduler reuses one {@link MutableStepReport} for every step and hands
 * it to its listeners synchronously, on its own thread. A listener reads the report during the call
 * and must not keep it (it is overwritten at the next step); {@link #copy()} gives an immutable
 * copy to keep. Listeners see only this read-only view.
 */
public interface StepReport {

  /** Whether a step's time was charged to requests or is system time. */
  enum Kind {
    CHARGED,
    SYSTEM
  }

  /** Model name. */
  String model();

  /** Device the time was measured on ({@code cpu}, {@code cuda:0}). */
  String device();

  Kind kind();

  /** Measured device time of the step. */
  long measuredNs();

  /** The part charged to requests: the sum of the shares ({@code 0} for system steps). */
  long chargedNs();

  /** The part charged to nobody ({@code measuredNs} for system steps, else {@code 0}). */
  long systemNs();

  /** Sequences in the step, each with one share ({@code 0} for system steps). */
  int sequences();

  /**
   * The share of the sequence in row {@code i} of the step.
   *
   * @throws IndexOutOfBoundsException unless {@code 0 <= i < sequences()}
   */
  long share(int i);

  /** Tokens processed in the step ({@code 0} for system steps). */
  int tokens();

  /** Whether the model step threw (its time is still measured and charged). */
  boolean failed();

  /** An immutable copy, safe to keep after the listener call returns. */
  default StepReport copy() {
    long[] shares = new long[sequences()];
    for (int i = 0; i < shares.length; i++) {
      shares[i] = share(i);
    }
    return new ImmutableStepReport(
        model(), device(), kind(), measuredNs(), chargedNs(), shares, tokens(), failed());
  }

  /**
   * A system step: time measured outside any request (model load, a warm-up pass), never charged.
   *
   * @throws IllegalArgumentException if {@code measuredNs} is negative
   */
  static StepReport system(String model, String device, long measuredNs) {
    Objects.requireNonNull(model, "model");
    Objects.requireNonNull(device, "device");
    if (measuredNs < 0) {
      throw new IllegalArgumentException("measuredNs must be >= 0, was " + measuredNs);
    }
    return new ImmutableStepReport(
        model, device, Kind.SYSTEM, measuredNs, 0, new long[0], 0, false);
  }
}
