package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import io.gpumeter.billing.ChargeBreakdown;
import java.io.IOException;

/**
 * The {@code charged_*} fields of a request's receipt in the request log: how the account paid for
 * it ({@link ChargeBreakdown}; server/README.md, "Receipts"). One method, {@link #values}, gives
 * them for both the JSON and the CSV page, so the two cannot differ. Integers are JSON numbers
 * (exact; the ppm-ns and nano-micro-unit figures may pass 2<sup>53</sup>, so they are also written
 * whole, never as floating point); all are null (empty CSV cells) while the charge is not deducted.
 */
final class ChargedColumns {
  private ChargedColumns() {}

  static final String[] NAMES = {
    "charged_included_device_ns",
    "charged_pool_used_ppm_ns",
    "charged_billable_device_ns",
    "charged_unit_price_micros_per_device_second",
    "charged_amount_micros",
    "charged_amount_exact_nano_micros",
    "charged_credits_micros",
    "charged_credits_exact_nano_micros",
    "charged_postpaid_exact_nano_micros",
    "charged_overspend_exact_nano_micros",
    "charged_due_micros",
  };

  /** The CSV header cells, in {@link #NAMES}' order. */
  static final String HEADER = String.join(",", NAMES);

  /** The figures in {@link #NAMES}' order, as decimal integers; nulls when not deducted. */
  static String[] values(ChargeBreakdown c) {
    if (c == null) {
      return new String[NAMES.length];
    }
    return new String[] {
      Long.toString(c.includedNs()),
      c.poolUsedPpmNs().toString(),
      Long.toString(c.billableNs()),
      Long.toString(c.unitPriceMicrosPerSecond()),
      Long.toString(c.amountMicros()),
      c.amountNanoMicros().toString(),
      Long.toString(c.creditsMicros()),
      c.creditsNanoMicros().toString(),
      c.postpaidNanoMicros().toString(),
      c.overspendNanoMicros().toString(),
      Long.toString(c.dueMicros()),
    };
  }

  static void writeJson(JsonGenerator g, ChargeBreakdown c) throws IOException {
    String[] v = values(c);
    for (int i = 0; i < NAMES.length; i++) {
      g.writeFieldName(NAMES[i]);
      if (v[i] == null) {
        g.writeNull();
      } else {
        g.writeNumber(v[i]);
      }
    }
  }

  static void writeCsv(StringBuilder sb, ChargeBreakdown c) {
    String[] v = values(c);
    for (String s : v) {
      sb.append(',');
      if (s != null) {
        sb.append(s);
      }
    }
  }
}
