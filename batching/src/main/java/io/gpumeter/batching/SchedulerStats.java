package io.gpumeter.batching;

/**
 * Figures a scheduler exposes for metrics; cheap to read from any thread.
 *
 * @param queued requests waiting for admission
 * @param running sequences in the running batch
 * @param steps steps run so far
 * @param lastStepNs measured time of the last step
 * @param lastBatchSize sequences in the last step
 * @param lastStepTokens tokens processed by the last step
 * @param completed generations finished (any status)
 * @param rejected submissions refused
 */
public record SchedulerStats(
    int queued,
    int running,
    long steps,
    long lastStepNs,
    int lastBatchSize,
    int lastStepTokens,
    long completed,
    long rejected) {}
