package io.gpumeter.server;

import io.gpumeter.batching.GenerationResult;
import io.gpumeter.batching.TokenListener;
import io.gpumeter.metering.Ticker;
import io.prometheus.metrics.core.datapoints.DistributionDataPoint;
import java.util.function.BiConsumer;

/**
 * One model's series of the generation histograms, looked up once when the model is served so that
 * an observation is a plain {@code observe} with no label lookup.
 *
 * <p>Threads: {@link #observeStep} runs on the model's scheduler thread; a {@link #newGeneration}
 * observer is called there too (its first token, its result).
 */
final class ModelMetrics {
  private final Ticker ticker;
  private final DistributionDataPoint timeToFirstToken;
  private final DistributionDataPoint queueWait;
  private final DistributionDataPoint stepDuration;
  private final DistributionDataPoint sequencesPerStep;

  ModelMetrics(
      Ticker ticker,
      DistributionDataPoint timeToFirstToken,
      DistributionDataPoint queueWait,
      DistributionDataPoint stepDuration,
      DistributionDataPoint sequencesPerStep) {
    this.ticker = ticker;
    this.timeToFirstToken = timeToFirstToken;
    this.queueWait = queueWait;
    this.stepDuration = stepDuration;
    this.sequencesPerStep = sequencesPerStep;
  }

  /** One model step: its measured device time and the sequences it ran. */
  void observeStep(long measuredNs, int sequences) {
    stepDuration.observe(measuredNs / 1e9);
    sequencesPerStep.observe(sequences);
  }

  /**
   * An observer for one generation: pass it as the request's {@link TokenListener} (time to first
   * token) and to {@code result().whenComplete} (queue wait).
   *
   * @param acceptedNanos when the server accepted the request, on the {@link HttpMetrics#now()}
   *     clock
   */
  GenerationObserver newGeneration(long acceptedNanos) {
    return new GenerationObserver(acceptedNanos);
  }

  /**
   * Observes time to first token (from {@code acceptedNanos} to the first generated token, so a
   * generation that produces none is not observed) and queue wait (submission to first step, as the
   * usage record has it; observed for every generation, however it ended). Owned by the scheduler
   * thread once submitted.
   */
  final class GenerationObserver implements TokenListener, BiConsumer<GenerationResult, Throwable> {
    private final long acceptedNanos;
    private boolean firstTokenSeen;

    private GenerationObserver(long acceptedNanos) {
      this.acceptedNanos = acceptedNanos;
    }

    @Override
    public void onToken(int token) {
      if (!firstTokenSeen) {
        firstTokenSeen = true;
        timeToFirstToken.observe(Math.max(0, ticker.read() - acceptedNanos) / 1e9);
      }
    }

    @Override
    public void accept(GenerationResult result, Throwable error) {
      if (result != null) {
        queueWait.observe(result.usage().queueNs() / 1e9);
      }
    }
  }
}
