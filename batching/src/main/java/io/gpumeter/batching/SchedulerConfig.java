package io.gpumeter.batching;

import io.gpumeter.metering.WeightPolicy;
import java.util.Objects;

/**
 * Immutable scheduler settings. Defaults suit the bundled demo model on 2 CPU cores.
 *
 * @param maxRunning sequences in the running batch at most (also the KV cache slots)
 * @param maxTokensPerStep token budget of one step (decode tokens first, then prefill chunks)
 * @param prefillChunk longest prompt chunk one sequence prefills in one step
 * @param queueCapacity submissions waiting for admission at most; beyond it submit is refused
 * @param batchWindowNanos when idle, how long the first arrival waits for company before its first
 *     step; 0 (the default) runs it at once, since a request arriving a moment later joins at the
 *     next step anyway
 * @param defaultTimeoutNanos deadline of a request that sets none
 * @param weightPolicy how a step's time is split among its sequences
 * @param maxQueuedPerKey submissions of one API key waiting for admission at most, so that one key
 *     cannot fill the queue and cause rejections for the others; beyond it submit is refused
 *     ({@link AdmissionRejectedException.Reason#QUEUE_FULL}). Values above {@code queueCapacity}
 *     leave only the total bound. {@link #defaultMaxQueuedPerKey} gives the default share.
 */
public record SchedulerConfig(
    int maxRunning,
    int maxTokensPerStep,
    int prefillChunk,
    int queueCapacity,
    long batchWindowNanos,
    long defaultTimeoutNanos,
    WeightPolicy weightPolicy,
    int maxQueuedPerKey) {

  /** The default per-key share of the queue: a quarter of it, rounded up. */
  public static final int DEFAULT_QUEUE_SHARE_DIVISOR = 4;

  /** With the default per-key share of the queue ({@link #defaultMaxQueuedPerKey}). */
  public SchedulerConfig(
      int maxRunning,
      int maxTokensPerStep,
      int prefillChunk,
      int queueCapacity,
      long batchWindowNanos,
      long defaultTimeoutNanos,
      WeightPolicy weightPolicy) {
    this(
        maxRunning,
        maxTokensPerStep,
        prefillChunk,
        queueCapacity,
        batchWindowNanos,
        defaultTimeoutNanos,
        weightPolicy,
        defaultMaxQueuedPerKey(queueCapacity));
  }

  /**
   * A quarter of {@code queueCapacity}, rounded up: one key alone can never fill the queue, and
   * three flooding keys still leave room for a fourth.
   */
  public static int defaultMaxQueuedPerKey(int queueCapacity) {
    return Math.max(
        1, (queueCapacity + DEFAULT_QUEUE_SHARE_DIVISOR - 1) / DEFAULT_QUEUE_SHARE_DIVISOR);
  }

  public SchedulerConfig {
    Objects.requireNonNull(weightPolicy, "weightPolicy");
    require(maxRunning >= 1, "maxRunning must be >= 1, was %s", maxRunning);
    require(maxTokensPerStep >= 1, "maxTokensPerStep must be >= 1, was %s", maxTokensPerStep);
    require(prefillChunk >= 1, "prefillChunk must be >= 1, was %s", prefillChunk);
    require(queueCapacity >= 1, "queueCapacity must be >= 1, was %s", queueCapacity);
    require(maxQueuedPerKey >= 1, "maxQueuedPerKey must be >= 1, was %s", maxQueuedPerKey);
    require(batchWindowNanos >= 0, "batchWindowNanos must be >= 0, was %s", batchWindowNanos);
    require(
        defaultTimeoutNanos > 0, "defaultTimeoutNanos must be > 0, was %s", defaultTimeoutNanos);
    require(
        maxTokensPerStep >= maxRunning,
        "maxTokensPerStep (%s) must be >= maxRunning (%s) so every running sequence can decode",
        maxTokensPerStep,
        maxRunning);
  }

  public static SchedulerConfig defaults() {
    return new SchedulerConfig(32, 256, 128, 1024, 0L, 300_000_000_000L, WeightPolicy.tokens());
  }

  /** Static batching: one sequence at a time (the "batching off" baseline). */
  public SchedulerConfig withMaxRunning(int n) {
    return new SchedulerConfig(
        n,
        Math.max(maxTokensPerStep, n),
        prefillChunk,
        queueCapacity,
        batchWindowNanos,
        defaultTimeoutNanos,
        weightPolicy,
        maxQueuedPerKey);
  }

  /** A queue of {@code n}, with the default per-key share of it. */
  public SchedulerConfig withQueueCapacity(int n) {
    return new SchedulerConfig(
        maxRunning,
        maxTokensPerStep,
        prefillChunk,
        n,
        batchWindowNanos,
        defaultTimeoutNanos,
        weightPolicy,
        defaultMaxQueuedPerKey(n));
  }

  public SchedulerConfig withMaxQueuedPerKey(int n) {
    return new SchedulerConfig(
        maxRunning,
        maxTokensPerStep,
        prefillChunk,
        queueCapacity,
        batchWindowNanos,
        defaultTimeoutNanos,
        weightPolicy,
        n);
  }

  public SchedulerConfig withTokenBudget(int maxTokensPerStep, int prefillChunk) {
    return new SchedulerConfig(
        maxRunning,
        maxTokensPerStep,
        prefillChunk,
        queueCapacity,
        batchWindowNanos,
        defaultTimeoutNanos,
        weightPolicy,
        maxQueuedPerKey);
  }

  public SchedulerConfig withBatchWindowNanos(long nanos) {
    return new SchedulerConfig(
        maxRunning,
        maxTokensPerStep,
        prefillChunk,
        queueCapacity,
        nanos,
        defaultTimeoutNanos,
        weightPolicy,
        maxQueuedPerKey);
  }

  public SchedulerConfig withDefaultTimeoutNanos(long nanos) {
    return new SchedulerConfig(
        maxRunning,
        maxTokensPerStep,
        prefillChunk,
        queueCapacity,
        batchWindowNanos,
        nanos,
        weightPolicy,
        maxQueuedPerKey);
  }

  public SchedulerConfig withWeightPolicy(WeightPolicy policy) {
    return new SchedulerConfig(
        maxRunning,
        maxTokensPerStep,
        prefillChunk,
        queueCapacity,
        batchWindowNanos,
        defaultTimeoutNanos,
        policy,
        maxQueuedPerKey);
  }

  private static void require(boolean ok, String message, Object... args) {
    if (!ok) {
      throw new IllegalArgumentException(String.format(message, args));
    }
  }
}
