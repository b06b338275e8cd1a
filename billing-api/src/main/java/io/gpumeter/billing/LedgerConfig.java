package io.gpumeter.billing;

import java.time.Duration;

/**
 * Settings of {@link LedgerWriter}.
 *
 * @param queueCapacity records that may wait for the writer; beyond it {@code publish} fails
 * @param maxBatchSize most records written in one transaction
 * @param linger how long the writer waits for more records once it has one (a few ms)
 * @param closeTimeout how long {@link LedgerWriter#close()} waits for the queue to drain
 */
public record LedgerConfig(
    int queueCapacity, int maxBatchSize, Duration linger, Duration closeTimeout) {

  public LedgerConfig {
    if (queueCapacity < 1) {
      throw new IllegalArgumentException("queueCapacity must be >= 1, was " + queueCapacity);
    }
    // 21 bound arrays per batch, so the size is not limited by the protocol's 65535 parameters;
    // this bound keeps one transaction short.
    if (maxBatchSize < 1 || maxBatchSize > 10_000) {
      throw new IllegalArgumentException("maxBatchSize must be in [1, 10000], was " + maxBatchSize);
    }
    if (linger == null || linger.isNegative()) {
      throw new IllegalArgumentException("linger must be >= 0, was " + linger);
    }
    if (closeTimeout == null || closeTimeout.isNegative()) {
      throw new IllegalArgumentException("closeTimeout must be >= 0, was " + closeTimeout);
    }
  }

  /** 65 536 queued, batches of up to 500, 2 ms linger, 30 s to drain on close. */
  public static LedgerConfig defaults() {
    return new LedgerConfig(65_536, 500, Duration.ofMillis(2), Duration.ofSeconds(30));
  }

  public LedgerConfig withQueueCapacity(int capacity) {
    return new LedgerConfig(capacity, maxBatchSize, linger, closeTimeout);
  }

  public LedgerConfig withMaxBatchSize(int size) {
    return new LedgerConfig(queueCapacity, size, linger, closeTimeout);
  }

  public LedgerConfig withLinger(Duration d) {
    return new LedgerConfig(queueCapacity, maxBatchSize, d, closeTimeout);
  }

  public LedgerConfig withCloseTimeout(Duration d) {
    return new LedgerConfig(queueCapacity, maxBatchSize, linger, d);
  }
}
