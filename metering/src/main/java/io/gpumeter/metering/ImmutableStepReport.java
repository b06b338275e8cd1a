package io.gpumeter.metering;

import java.util.Objects;

/** A step report that never changes: system steps and copies of scheduler reports. */
final class ImmutableStepReport implements StepReport {
  private final String model;
  private final String device;
  private final Kind kind;
  private final long measuredNs;
  private final long chargedNs;
  private final long[] shares;
  private final int tokens;
  private final boolean failed;

  ImmutableStepReport(
      String model,
      String device,
      Kind kind,
      long measuredNs,
      long chargedNs,
      long[] shares,
      int tokens,
      boolean failed) {
    this.model = Objects.requireNonNull(model, "model");
    this.device = Objects.requireNonNull(device, "device");
    this.kind = Objects.requireNonNull(kind, "kind");
    this.measuredNs = measuredNs;
    this.chargedNs = chargedNs;
    this.shares = shares;
    this.tokens = tokens;
    this.failed = failed;
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
    return kind;
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
    return measuredNs - chargedNs;
  }

  @Override
  public int sequences() {
    return shares.length;
  }

  @Override
  public long share(int i) {
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

  @Override
  public StepReport copy() {
    return this;
  }

  @Override
  public String toString() {
    return kind
        + " step of "
        + model
        + " on "
        + device
        + ": measured "
        + measuredNs
        + " ns, charged "
        + chargedNs
        + " ns to "
        + shares.length
        + " sequences";
  }
}
