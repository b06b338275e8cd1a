package io.gpumeter.benchmarks;

import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageSink;
import java.util.concurrent.CompletableFuture;

/** Drops records; "durable" at once. */
final class NoopUsageSink implements UsageSink {
  static final NoopUsageSink INSTANCE = new NoopUsageSink();
  private static final CompletableFuture<Void> DONE = CompletableFuture.completedFuture(null);

  private NoopUsageSink() {}

  @Override
  public CompletableFuture<Void> publish(UsageRecord record) {
    return DONE;
  }
}
