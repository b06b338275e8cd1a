package io.gpumeter.billing;

import java.util.List;

/**
 * The result of recomputing an invoice from the raw per-request records and the price versions:
 * {@code recomputed} is the invoice as recomputed; {@code problems} lists every difference (empty
 * when it matches to the micro-unit); {@code unpricedRecords} counts records of the account and
 * month with no price version (not billed).
 */
public record InvoiceVerification(
    Invoice stated, Invoice recomputed, List<String> problems, long unpricedRecords) {
  public InvoiceVerification {
    problems = List.copyOf(problems);
  }

  public boolean ok() {
    return problems.isEmpty();
  }
}
