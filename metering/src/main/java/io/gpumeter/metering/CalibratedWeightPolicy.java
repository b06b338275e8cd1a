package io.gpumeter.metering;

import java.time.Instant;
import java.util.Objects;

/**
 * A {@link LinearWeightPolicy} fitted on a device by the {@code calibrate} command and read from a
 * model directory's {@code weights.json}. It weighs exactly like its linear policy; its {@link
 * #describe()} also names the file's version and when it was fitted, so every record says which
 * calibration split it, e.g. {@code calibrated(v=2,2026-11-30T17:40:12Z):linear(p=8100,d=...)}.
 *
 * @param linear the weights, in picoseconds per token (prefill), per sequence (decode) and per
 *     context position
 * @param version the file's version, counted up by each calibration of that model directory
 * @param fittedAt when the fit was made
 */
public record CalibratedWeightPolicy(LinearWeightPolicy linear, int version, Instant fittedAt)
    implements WeightPolicy {

  public CalibratedWeightPolicy {
    Objects.requireNonNull(linear, "linear");
    Objects.requireNonNull(fittedAt, "fittedAt");
    if (version < 1) {
      throw new IllegalArgumentException("version must be >= 1, was " + version);
    }
  }

  @Override
  public long weight(boolean prefill, int tokens, int contextTokens) {
    return linear.weight(prefill, tokens, contextTokens);
  }

  @Override
  public String describe() {
    return "calibrated(v=" + version + "," + fittedAt + "):" + linear.describe();
  }
}
