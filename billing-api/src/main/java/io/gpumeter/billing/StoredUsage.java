package io.gpumeter.billing;

import io.gpumeter.metering.UsageRecord;
import java.time.Instant;

/**
 * A ledger row: the record as stored (time stamps at microsecond precision) and when it was
 * committed.
 */
public record StoredUsage(UsageRecord record, Instant recordedAt) {}
