package io.gpumeter.batching;

import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageSink;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;

/** Keeps records in memory; the PostgreSQL ledger behind the same interface is tested elsewhere. */
final class RecordingSink implements UsageSink {
  final List<UsageRecord> records = new CopyOnWriteArrayList<>();

  @Override
  public CompletableFuture<Void> publish(UsageRecord record) {
    records.add(record);
    return CompletableFuture.completedFuture(null);
  }

  long deviceNs() {
    return records.stream().mapToLong(UsageRecord::deviceNs).sum();
  }
}
