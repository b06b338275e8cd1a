package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import io.gpumeter.billing.Balance;
import io.gpumeter.billing.Billing;
import io.gpumeter.billing.ChargeCost;
import io.gpumeter.metering.UsageRecord;
import io.netty.util.AsciiString;
import java.io.IOException;
import java.math.BigDecimal;
import java.util.Locale;
import java.util.Optional;

/**
 * What a completion's answer says about its cost and the account's funds (server/README.md,
 * "Receipts"): in {@code usage}, {@code cost} (integer micro-units), {@code cost_exact} (the exact
 * cost as a decimal string of currency units, never rounded), {@code currency} and {@code
 * price_version}; and the headers {@code x-gpumeter-cost-micros}, {@code
 * x-ratelimit-remaining-credit-micros} and {@code x-ratelimit-remaining-allowance-device-ns}.
 *
 * <p>The cost is what the ledger stores for the request: {@link Billing#receiptCost} prices the
 * record with the trigger's rule from the cached price versions, rounded by the one rule. The
 * remaining figures come from the {@link BalanceCache} (no database round trip; as stale as it
 * says) and do not include this request's charge.
 *
 * @param cost the priced cost, or null (no price version covers the record, or the account's
 *     currency is not known because its balance could not be read)
 * @param balance the cached balance, or null when it could not be read
 */
record Receipt(ChargeCost cost, Balance balance) {
  static final Receipt NONE = new Receipt(null, null);

  static final AsciiString X_COST_MICROS = AsciiString.cached("x-gpumeter-cost-micros");
  static final AsciiString X_REMAINING_CREDIT =
      AsciiString.cached("x-ratelimit-remaining-credit-micros");
  static final AsciiString X_REMAINING_ALLOWANCE =
      AsciiString.cached("x-ratelimit-remaining-allowance-device-ns");

  /** The receipt of {@code record} for an account whose balance is {@code balance}. */
  static Receipt of(Billing billing, UsageRecord record, Optional<Balance> balance) {
    if (balance.isEmpty()) {
      return NONE;
    }
    Balance b = balance.get();
    return new Receipt(billing.receiptCost(record, b.currency()).orElse(null), b);
  }

  /** Plan allowance of the month left, device ns (never negative). */
  static long remainingAllowance(Balance b) {
    return Math.max(0, b.allowanceIncludedNs() - b.allowanceUsedNs());
  }

  /** The cost fields of {@code usage} (null when unknown). */
  void writeJson(JsonGenerator g) throws IOException {
    if (cost == null) {
      g.writeNullField("cost");
      g.writeNullField("cost_exact");
    } else {
      g.writeNumberField("cost", cost.roundedMicros());
      g.writeStringField("cost_exact", new BigDecimal(cost.exactNanoMicros(), 15).toPlainString());
    }
    if (balance == null) {
      g.writeNullField("currency");
    } else {
      g.writeStringField("currency", balance.currency().toLowerCase(Locale.ROOT));
    }
    if (cost == null) {
      g.writeNullField("price_version");
    } else {
      g.writeNumberField("price_version", cost.priceVersionId());
    }
  }

  /** The cost and remaining-funds headers of the answer (those it knows). */
  void addHeaders(Exchange ex) {
    if (cost != null) {
      ex.header(X_COST_MICROS, Long.toString(cost.roundedMicros()));
    }
    if (balance != null) {
      addRateLimitHeaders(ex, balance);
    }
  }

  static void addRateLimitHeaders(Exchange ex, Balance b) {
    ex.header(X_REMAINING_CREDIT, Long.toString(b.micros()));
    ex.header(X_REMAINING_ALLOWANCE, Long.toString(remainingAllowance(b)));
  }
}
