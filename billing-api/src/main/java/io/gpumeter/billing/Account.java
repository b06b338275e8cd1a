package io.gpumeter.billing;

import java.time.Instant;

/**
 * An account: the payer. {@code currency} is its ISO 4217 code (every price, credit and invoice of
 * the account is in it); {@code status} is {@code active} or {@code suspended}; {@code
 * postpaidAllowed} says whether usage past its allowance and credits is billed on the invoice
 * (true) or recorded as bounded overspend (false).
 */
public record Account(
    long id,
    String name,
    String currency,
    String status,
    boolean postpaidAllowed,
    Instant createdAt) {
  public static final String ACTIVE = "active";
  public static final String SUSPENDED = "suspended";
}
