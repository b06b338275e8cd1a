package io.gpumeter.billing.invoices;

import io.gpumeter.billing.Invoice;
import io.gpumeter.billing.InvoiceLine;
import io.gpumeter.billing.pricing.Money;

/**
 * An invoice as JSON, CSV or printable HTML. Money is integer micro-units (JSON integers) with a
 * decimal string beside it; device time is integer nanoseconds with device-seconds as a decimal
 * string. No floating point.
 */
public final class InvoiceFormats {
  private InvoiceFormats() {}

  public static String json(Invoice inv) {
    StringBuilder sb = new StringBuilder(256 + inv.lines().size() * 400);
    sb.append("{\"object\":\"invoice\",\"account_id\":").append(inv.accountId());
    sb.append(",\"account\":").append(quote(inv.accountName()));
    sb.append(",\"period\":\"").append(inv.period()).append('"');
    sb.append(",\"currency\":\"").append(inv.currency()).append('"');
    sb.append(",\"status\":\"").append(inv.isFinal() ? "final" : "draft").append('"');
    if (inv.isFinal()) {
      sb.append(",\"finalized_at\":\"").append(inv.finalizedAt()).append('"');
    }
    sb.append(",\"total_micros\":").append(inv.totalMicros());
    sb.append(",\"total\":\"").append(Money.decimal(inv.totalMicros())).append('"');
    sb.append(",\"lines\":[");
    boolean first = true;
    for (InvoiceLine l : inv.lines()) {
      if (!first) {
        sb.append(',');
      }
      first = false;
      sb.append("{\"model\":").append(quote(l.model()));
      sb.append(",\"device_class\":\"").append(l.deviceClass()).append('"');
      sb.append(",\"price_version\":").append(l.priceVersionId());
      sb.append(",\"unit_price_micros_per_device_second\":").append(l.unitPriceMicrosPerSecond());
      sb.append(",\"late_from\":")
          .append(l.lateFrom() == null ? "null" : "\"" + l.lateFrom() + "\"");
      sb.append(",\"requests\":").append(l.requests());
      sb.append(",\"device_ns\":").append(l.deviceNs());
      sb.append(",\"device_seconds\":\"").append(seconds(l.deviceNs())).append('"');
      sb.append(",\"included_ns\":").append(l.includedNs());
      sb.append(",\"included_device_seconds\":\"").append(seconds(l.includedNs())).append('"');
      sb.append(",\"pool_used_ppm_ns\":").append(l.poolUsedPpmNs());
      sb.append(",\"pool_used_weighted_device_seconds\":").append(quoteOrNull(l));
      sb.append(",\"billable_ns\":").append(l.billableNs());
      sb.append(",\"billable_device_seconds\":\"").append(seconds(l.billableNs())).append('"');
      sb.append(",\"amount_micros\":").append(l.amountMicros());
      sb.append(",\"credits_micros\":").append(l.creditsMicros());
      sb.append(",\"due_micros\":").append(l.dueMicros());
      sb.append(",\"due\":\"").append(Money.decimal(l.dueMicros())).append("\"}");
    }
    return sb.append("]}").toString();
  }

  public static String csv(Invoice inv) {
    StringBuilder sb =
        new StringBuilder(
            "account,period,currency,model,device_class,price_version,"
                + "unit_price_micros_per_device_second,late_from,requests,device_ns,included_ns,"
                + "pool_used_ppm_ns,pool_used_weighted_device_seconds,"
                + "billable_ns,amount_micros,credits_micros,due_micros\n");
    for (InvoiceLine l : inv.lines()) {
      sb.append(csvField(inv.accountName())).append(',').append(inv.period()).append(',');
      sb.append(inv.currency()).append(',').append(csvField(l.model())).append(',');
      sb.append(l.deviceClass()).append(',').append(l.priceVersionId()).append(',');
      sb.append(l.unitPriceMicrosPerSecond()).append(',');
      sb.append(l.lateFrom() == null ? "" : l.lateFrom().toString()).append(',');
      sb.append(l.requests()).append(',').append(l.deviceNs()).append(',');
      sb.append(l.includedNs()).append(',');
      sb.append(l.poolUsedPpmNs() == null ? "" : l.poolUsedPpmNs().toString()).append(',');
      sb.append(l.poolUsedPpmNs() == null ? "" : l.poolUsedWeightedDeviceSeconds()).append(',');
      sb.append(l.billableNs()).append(',');
      sb.append(l.amountMicros()).append(',').append(l.creditsMicros()).append(',');
      sb.append(l.dueMicros()).append('\n');
    }
    sb.append(csvField(inv.accountName())).append(',').append(inv.period()).append(',');
    sb.append(inv.currency()).append(",TOTAL,,,,,,,,,,,,,").append(inv.totalMicros()).append('\n');
    return sb.toString();
  }

  public static String html(Invoice inv) {
    StringBuilder sb = new StringBuilder(1024 + inv.lines().size() * 300);
    sb.append("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Invoice ")
        .append(esc(inv.accountName()))
        .append(' ')
        .append(inv.period())
        .append("</title><style>body{font-family:sans-serif}td,th{padding:2px 8px;")
        .append("border-bottom:1px solid #ccc}td.n{text-align:right}</style></head><body>");
    sb.append("<h1>Invoice ").append(inv.period()).append("</h1><p>Account: ");
    sb.append(esc(inv.accountName())).append(" (").append(inv.accountId()).append(")<br>Status: ");
    sb.append(inv.isFinal() ? "final, " + inv.finalizedAt() : "draft").append("<br>Currency: ");
    sb.append(inv.currency()).append("</p><table><tr><th>Model</th><th>Device class</th>");
    sb.append("<th>Price version</th><th>Late from</th><th>Requests</th><th>Device-seconds</th>");
    sb.append("<th>Included device-seconds</th><th>Pool used, weighted device-seconds</th>");
    sb.append("<th>Billable device-seconds</th><th>Unit price / device-s</th>");
    sb.append("<th>Amount</th><th>Credits</th><th>Due</th></tr>");
    for (InvoiceLine l : inv.lines()) {
      sb.append("<tr><td>").append(esc(l.model())).append("</td><td>").append(l.deviceClass());
      sb.append("</td><td class=n>").append(l.priceVersionId()).append("</td><td>");
      sb.append(l.lateFrom() == null ? "" : l.lateFrom().toString());
      sb.append("</td><td class=n>").append(l.requests());
      sb.append("</td><td class=n>").append(seconds(l.deviceNs()));
      sb.append("</td><td class=n>").append(seconds(l.includedNs()));
      sb.append("</td><td class=n>");
      sb.append(l.poolUsedPpmNs() == null ? "" : l.poolUsedWeightedDeviceSeconds());
      sb.append("</td><td class=n>").append(seconds(l.billableNs()));
      sb.append("</td><td class=n>").append(Money.decimal(l.unitPriceMicrosPerSecond()));
      sb.append("</td><td class=n>").append(Money.decimal(l.amountMicros()));
      sb.append("</td><td class=n>").append(Money.decimal(l.creditsMicros()));
      sb.append("</td><td class=n>").append(Money.decimal(l.dueMicros())).append("</td></tr>");
    }
    sb.append("<tr><th colspan=12>Total</th><th class=n>").append(Money.decimal(inv.totalMicros()));
    return sb.append("</th></tr></table></body></html>").toString();
  }

  private static String quoteOrNull(InvoiceLine l) {
    return l.poolUsedPpmNs() == null ? "null" : "\"" + l.poolUsedWeightedDeviceSeconds() + "\"";
  }

  /** Nanoseconds as exact decimal seconds. */
  static String seconds(long ns) {
    return java.math.BigDecimal.valueOf(ns, 9).toPlainString();
  }

  private static String quote(String s) {
    StringBuilder sb = new StringBuilder(s.length() + 2).append('"');
    for (int i = 0; i < s.length(); i++) {
      char ch = s.charAt(i);
      switch (ch) {
        case '"' -> sb.append("\\\"");
        case '\\' -> sb.append("\\\\");
        default -> {
          if (ch < 0x20) {
            sb.append(String.format("\\u%04x", (int) ch));
          } else {
            sb.append(ch);
          }
        }
      }
    }
    return sb.append('"').toString();
  }

  private static String csvField(String s) {
    if (s.indexOf(',') < 0 && s.indexOf('"') < 0 && s.indexOf('\n') < 0) {
      return s;
    }
    return '"' + s.replace("\"", "\"\"") + '"';
  }

  private static String esc(String s) {
    return s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\"", "&quot;");
  }
}
