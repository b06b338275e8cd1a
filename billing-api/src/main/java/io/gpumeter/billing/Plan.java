package io.gpumeter.billing;

/** A plan: device nanoseconds included per UTC calendar month, one pool over all device classes. */
public record Plan(long id, String name, long includedNs) {}
