package io.gpumeter.billing;

import java.util.List;

/**
 * What one {@link io.gpumeter.billing.retention.MaintenanceTask#run()} did.
 *
 * @param skipped another replica held the maintenance lock; nothing was done
 * @param created partitions created (e.g. {@code usage_records_p2026_12})
 * @param dropped partitions dropped whole (older than the retention)
 * @param movedFromDefault rows moved from {@code usage_records_default} into a new partition
 * @param deletedFromDefault rows older than the retention deleted from the default partition
 * @param prunedClaims request-id claims deleted with their raw rows
 * @param prunedMinutes {@code device_time_minutely} rows older than the retention deleted
 * @param prunedMeasuredBatches {@code measured_batches} claims committed more than a day before the
 *     retention cutoff deleted (a replay of one of them could only touch minutes already pruned)
 * @param prunedIdempotencyKeys expired {@code idempotency_keys} rows deleted (kept 24 h)
 */
public record MaintenanceReport(
    boolean skipped,
    List<String> created,
    List<String> dropped,
    long movedFromDefault,
    long deletedFromDefault,
    long prunedClaims,
    long prunedMinutes,
    long prunedMeasuredBatches,
    long prunedIdempotencyKeys) {}
