package io.gpumeter.billing;

import java.util.Objects;

/**
 * Device time measured for one model on one device in one UTC minute, as deltas to add: what the
 * recorder ({@link MeasuredTimeRecorder}) accumulated and hands to the ledger, which makes it
 * durable together with a batch of usage records.
 *
 * @param minute epoch minutes (UTC)
 * @param measuredNs device time measured; always {@code chargedNs + systemNs}
 * @param chargedNs part of it handed out to requests as shares
 * @param systemNs part of it charged to nobody (load, warm-up)
 * @param steps steps measured
 */
public record MeasuredDelta(
    long minute,
    String model,
    String device,
    long measuredNs,
    long chargedNs,
    long systemNs,
    long steps) {

  public MeasuredDelta {
    Objects.requireNonNull(model, "model");
    Objects.requireNonNull(device, "device");
    if (chargedNs < 0 || systemNs < 0 || steps < 0 || measuredNs != chargedNs + systemNs) {
      throw new IllegalArgumentException(
          "measured deltas must be >= 0 with measured = charged + system, were measured="
              + measuredNs
              + " charged="
              + chargedNs
              + " system="
              + systemNs
              + " steps="
              + steps);
    }
  }
}
