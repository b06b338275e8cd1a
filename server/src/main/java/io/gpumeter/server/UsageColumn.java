package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import io.gpumeter.billing.CostBucketRow;
import io.gpumeter.billing.UsageBucketRow;
import io.gpumeter.billing.accounting.Accounting;
import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Function;

/**
 * A field of a usage or costs result, with its one name in JSON and in CSV. The endpoint writes
 * whatever list of columns it is given, so fields slot in by adding columns, not by changing the
 * writers.
 *
 * @param name the JSON field and CSV header; stable (clients key on it)
 * @param value the value of a result: a Long, a String, a {@link Nested} object (JSON only) or null
 * @param <R> the result type ({@link UsageBucketRow} or {@link CostBucketRow})
 */
record UsageColumn<R>(String name, Function<R, Object> value) {

  /** A JSON object value: its fields in order (Long, String or null). */
  record Nested(Map<String, Object> fields) {}

  /**
   * The completions result's fields after {@code start_time, end_time} (which come from the
   * bucket): the grouped fields (null when not grouped by), OpenAI's counts, then device time.
   */
  static final List<UsageColumn<UsageBucketRow>> COMPLETIONS =
      List.of(
          new UsageColumn<>("model", UsageBucketRow::model),
          new UsageColumn<>(
              "api_key_id", r -> r.apiKeyId() == null ? null : Long.toString(r.apiKeyId())),
          new UsageColumn<>("device", UsageBucketRow::device),
          new UsageColumn<>("session_id", UsageBucketRow::sessionId),
          new UsageColumn<>("input_tokens", r -> r.totals().promptTokens()),
          new UsageColumn<>("output_tokens", r -> r.totals().completionTokens()),
          new UsageColumn<>("num_model_requests", r -> r.totals().requests()),
          new UsageColumn<>("device_time_ns", r -> r.totals().deviceNs()),
          new UsageColumn<>("prefill_time_ns", r -> r.totals().prefillNs()),
          new UsageColumn<>("decode_time_ns", r -> r.totals().decodeNs()));

  /**
   * The costs result's JSON fields (contracts: {@code amount} as {@code value_micros}, the decimal
   * string {@code value} and the lower-case {@code currency}; then the grouped fields, null when
   * not grouped by).
   */
  static final List<UsageColumn<CostBucketRow>> COSTS_JSON =
      List.of(
          new UsageColumn<>("amount", UsageColumn::amount),
          new UsageColumn<>("model", CostBucketRow::model),
          new UsageColumn<>(
              "api_key_id", r -> r.apiKeyId() == null ? null : Long.toString(r.apiKeyId())),
          new UsageColumn<>("device", CostBucketRow::device),
          new UsageColumn<>("session_id", CostBucketRow::sessionId));

  /** The costs result's CSV columns: flat, the amount in micro-units, decimal and currency. */
  static final List<UsageColumn<CostBucketRow>> COSTS_CSV =
      List.of(
          new UsageColumn<>("model", CostBucketRow::model),
          new UsageColumn<>(
              "api_key_id", r -> r.apiKeyId() == null ? null : Long.toString(r.apiKeyId())),
          new UsageColumn<>("device", CostBucketRow::device),
          new UsageColumn<>("session_id", CostBucketRow::sessionId),
          new UsageColumn<>("amount_value_micros", CostBucketRow::micros),
          new UsageColumn<>("amount_value", r -> Accounting.decimal(r.micros())),
          new UsageColumn<>("currency", r -> r.currency().toLowerCase(Locale.ROOT)),
          new UsageColumn<>("num_model_requests", CostBucketRow::requests));

  private static Object amount(CostBucketRow r) {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("value_micros", r.micros());
    m.put("value", Accounting.decimal(r.micros()));
    m.put("currency", r.currency().toLowerCase(Locale.ROOT));
    return new Nested(m);
  }

  void writeJson(JsonGenerator g, R row) throws IOException {
    writeJsonField(g, name, value.apply(row));
  }

  private static void writeJsonField(JsonGenerator g, String name, Object v) throws IOException {
    if (v == null) {
      g.writeNullField(name);
    } else if (v instanceof Long l) {
      g.writeNumberField(name, l);
    } else if (v instanceof Nested n) {
      g.writeObjectFieldStart(name);
      for (Map.Entry<String, Object> e : n.fields().entrySet()) {
        writeJsonField(g, e.getKey(), e.getValue());
      }
      g.writeEndObject();
    } else {
      g.writeStringField(name, v.toString());
    }
  }

  /** The value as a CSV cell (RFC 4180: quoted when it holds a comma, quote or line break). */
  void writeCsv(StringBuilder sb, R row) {
    Object v = value.apply(row);
    if (v == null) {
      return;
    }
    String s = v.toString();
    boolean quote = false;
    for (int i = 0; i < s.length() && !quote; i++) {
      char c = s.charAt(i);
      quote = c == ',' || c == '"' || c == '\n' || c == '\r';
    }
    if (!quote) {
      sb.append(s);
      return;
    }
    sb.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (c == '"') {
        sb.append('"');
      }
      sb.append(c);
    }
    sb.append('"');
  }
}
