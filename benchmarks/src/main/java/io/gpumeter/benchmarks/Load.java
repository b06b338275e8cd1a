package io.gpumeter.benchmarks;

import java.util.Locale;

/** What one load slice of {@link ServerThroughput} measured. */
record Load(
    int clients,
    double tokens,
    long requests,
    long completedTokens,
    long latencyNs,
    long errors,
    double seconds,
    String firstError,
    StepStats.Snapshot steps) {
  double tokensPerSecond() {
    return tokens / seconds;
  }

  @Override
  public String toString() {
    return String.format(
        Locale.ROOT,
        "%d requests completed in %.1f s, %.1f tokens/request,"
            + " %.1f ms mean latency, %d errors%s; scheduler: %s",
        requests,
        seconds,
        requests == 0 ? 0.0 : completedTokens / (double) requests,
        requests == 0 ? 0.0 : latencyNs / 1e6 / requests,
        errors,
        firstError == null ? "" : " (first: " + firstError + ")",
        steps.describe(seconds));
  }
}
