package io.gpumeter.billing;

import java.math.BigInteger;
import java.time.Instant;
import java.util.Objects;

/**
 * KV-cache memory-time of one key's requests in one hour on one model (issue 18): measured and
 * reported, not priced.
 *
 * @param hour start of the hour, UTC ({@code null} for a total over a whole report)
 * @param model model name ({@code null} for a total)
 * @param kvByteNs the requests' KV byte-nanoseconds added up (exact; may exceed a {@code long})
 * @param peakKvBytes the largest peak KV bytes of any one of those requests
 */
public record KvUsage(Instant hour, String model, BigInteger kvByteNs, long peakKvBytes) {
  public KvUsage {
    Objects.requireNonNull(kvByteNs, "kvByteNs");
    if (kvByteNs.signum() < 0 || peakKvBytes < 0) {
      throw new IllegalArgumentException("negative KV usage: " + kvByteNs + ", " + peakKvBytes);
    }
  }
}
