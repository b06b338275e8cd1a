package io.gpumeter.metering;

import java.util.Objects;

/**
 * The scheduler's one reusable step report: filled in once per step, then read by the listeners
 * through the {@link StepReport} view (see its lifetime contract). Filling allocates nothing; it
 * copies the shares and adds them up, which is the only place a step's charged time is summed.
 *
 * <p>Concurrency: owned by one thread (the scheduler thread), which fills it and calls its
 * listeners; not safe to share.
 */
public final class MutableStepReport implements StepReport {
  private final String model;
  private final String device;
  private final long[] shares;
  private long measuredNs;
  private long chargedNs;
  private int sequences;
  private int tokens;
  private boolean failed;

  /**
   * @param capacity the most sequences a step can hold
   */
  public MutableStepReport(String model, String device, int capacity) {
    this.model = Objects.requireNonNull(model, "model");
    this.device = Objects.requireNonNull(device, "device");
    if (capacity < 1) {
      throw new IllegalArgumentException("capacity must be >= 1, was " + capacity);
    }
    this.shares = new long[capacity];
  }

  /**
   * Fills in a charged step from the apportioned shares {@code shares[0..sequences)}.
   *
   * @throws IllegalArgumentException if {@code sequences} is not in {@code [1, capacity]}, or the
   *     shares do not sum to {@code measuredNs} (an apportioning bug: every measured nanosecond of
   *     a step is charged, invariant 1)
   */
  public MutableStepReport fillCharged(
      long measuredNs, long[] shares, int sequences, int tokens, boolean failed) {
    if (sequences < 1 || sequences > this.shares.length) {
      throw new IllegalArgumentException(
          "sequences must be in [1, " + this.shares.length + "], was " + sequences);
    }
    long sum = 0;
    for (int i = 0; i < sequences; i++) {
      long s = shares[i];
      this.shares[i] = s;
      sum += s;
    }
    if (sum != measuredNs) {
      throw new IllegalArgumentException(
          "shares sum to " + sum + " ns but the step measured " + measuredNs + " ns");
    }
    this.measuredNs = measuredNs;
    this.chargedNs = sum;
    this.sequences = sequences;
    this.tokens = tokens;
    this.failed = failed;
    return this;
  }

  @Override
  public String model() {
    return model;
  }

  @Override
  public String device() {
    return device;
  }

  @Override
  public Kind kind() {
    return Kind.CHARGED;
  }

  @Override
  public long measuredNs() {
    return measuredNs;
  }

  @Override
  public long chargedNs() {
    return chargedNs;
  }

  @Override
  public long systemNs() {
    return 0;
  }

  @Override
  public int sequences() {
    return sequences;
  }

  @Override
  public long share(int i) {
    Objects.checkIndex(i, sequences);
    return shares[i];
  }

  @Override
  public int tokens() {
    return tokens;
  }

  @Override
  public boolean failed() {
    return failed;
  }
}
