package io.gpumeter.benchmarks;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * {@link ServerThroughput}: totals of one kind of slice (direct at B, server at B, batching off).
 */
final class Tally {
  double tokens;
  double seconds;
  final List<Double> perRound = new ArrayList<>();
  StepStats.Snapshot steps = StepStats.Snapshot.ZERO;
  long requests;
  long completedTokens;
  long latencyNs;
  long errors;
  String firstError;

  double tokensPerSecond() {
    return tokens / seconds;
  }

  void add(double tokens, double seconds) {
    this.tokens += tokens;
    this.seconds += seconds;
    perRound.add(tokens / seconds);
  }

  void add(Load l) {
    add(l.tokens(), l.seconds());
    steps = steps.plus(l.steps());
    requests += l.requests();
    completedTokens += l.completedTokens();
    latencyNs += l.latencyNs();
    errors += l.errors();
    if (firstError == null) {
      firstError = l.firstError();
    }
  }

  String describe() {
    return String.format(
        Locale.ROOT,
        "%d requests completed in the windows, %.1f tokens/request, %.1f ms mean latency, %d"
            + " errors%s; scheduler: %s",
        requests,
        requests == 0 ? 0.0 : completedTokens / (double) requests,
        requests == 0 ? 0.0 : latencyNs / 1e6 / requests,
        errors,
        firstError == null ? "" : " (first: " + firstError + ")",
        steps.describe(seconds));
  }
}
