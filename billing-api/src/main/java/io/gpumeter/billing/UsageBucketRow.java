package io.gpumeter.billing;

import java.time.Instant;

/**
 * One result of a bucketed usage query: the usage of one group in one bucket. The group fields not
 * grouped by are null. Only groups with at least one (not voided) request appear.
 *
 * @param bucket the bucket's start
 * @param model the model, when grouped by it
 * @param apiKeyId the key, when grouped by it
 * @param device the device, when grouped by it
 * @param sessionId the session, when grouped by it
 * @param totals requests, device time and tokens
 */
public record UsageBucketRow(
    Instant bucket,
    String model,
    Long apiKeyId,
    String device,
    String sessionId,
    UsageTotals totals) {}
