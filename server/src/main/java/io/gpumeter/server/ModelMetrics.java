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
  private final String device;
  private final SlidingMax maxStep;

  /**
   * @param device the {@code device} label of this model's series (also of its exact max-step
   *     gauge, {@link #maxStepNs()})
   */
  ModelMetrics(
      Ticker ticker,
      DistributionDataPoint timeToFirstToken,
      DistributionDataPoint queueWait,
      DistributionDataPoint stepDuration,
      DistributionDataPoint sequencesPerStep,
      String device) {
    this.ticker = ticker;
    this.device = device;
    this.maxStep = new SlidingMax(ticker, MAX_STEP_SLOTS, MAX_STEP_SLOT_NANOS);
    this.timeToFirstToken = timeToFirstToken;
    this.queueWait = queueWait;
    this.stepDuration = stepDuration;
    this.sequencesPerStep = sequencesPerStep;
  }

  /** Slots of the max-step window: 6 × 10 s, so a step shows for 50–60 s (4+ scrapes at 15 s). */
  static final int MAX_STEP_SLOTS = 6;

  static final long MAX_STEP_SLOT_NANOS = 10_000_000_000L;

  /** The {@code device} label of this model's series. */
  String device() {
    return device;
  }

  /**
   * The longest step (measured device time, exact) of the last 50–60 s ({@code
   * gpumeter_step_max_seconds}); 0 when no step ran in it.
   */
  long maxStepNs() {
    return maxStep.max();
  }

  /** One model step: its measured device time and the sequences it ran. */
  void observeStep(long measuredNs, int sequences) {
    stepDuration.observe(measuredNs / 1e9);
    maxStep.observe(measuredNs);
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
