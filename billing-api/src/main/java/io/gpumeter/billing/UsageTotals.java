package io.gpumeter.billing;

/** Sums over a set of requests. Times in nanoseconds of device time. */
public record UsageTotals(
    long requests,
    long deviceNs,
    long prefillNs,
    long decodeNs,
    long promptTokens,
    long completionTokens) {

  public static final UsageTotals ZERO = new UsageTotals(0, 0, 0, 0, 0, 0);

  public UsageTotals plus(UsageTotals o) {
    return new UsageTotals(
        Math.addExact(requests, o.requests),
        Math.addExact(deviceNs, o.deviceNs),
        Math.addExact(prefillNs, o.prefillNs),
        Math.addExact(decodeNs, o.decodeNs),
        Math.addExact(promptTokens, o.promptTokens),
        Math.addExact(completionTokens, o.completionTokens));
  }
}
