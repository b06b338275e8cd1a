package io.gpumeter.billing;

import java.time.Instant;

/** An account on a plan from {@code from} until {@code to} (null: open-ended). */
public record Subscription(long id, long accountId, long planId, Instant from, Instant to) {}
