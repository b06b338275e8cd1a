package io.gpumeter.billing;

import java.time.Instant;
import java.time.YearMonth;
import java.util.List;

/**
 * The invoice of one account for one UTC calendar month: its lines and {@code totalMicros} (the
 * exact sum of the lines' due amounts). {@code finalizedAt} null means a draft, computed from the
 * ledger as it is now.
 */
public record Invoice(
    long accountId,
    String accountName,
    YearMonth period,
    String currency,
    List<InvoiceLine> lines,
    long totalMicros,
    Instant finalizedAt) {
  public Invoice {
    lines = List.copyOf(lines);
  }

  public boolean isFinal() {
    return finalizedAt != null;
  }
}
