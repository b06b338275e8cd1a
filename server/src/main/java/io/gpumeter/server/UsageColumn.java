package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import io.gpumeter.billing.UsageBucketRow;
import java.io.IOException;
import java.util.List;
import java.util.function.Function;

/**
 * A field of a completions usage result, with its one name in JSON and in CSV. The endpoint writes
 * whatever list of columns it is given, so fields (the cost columns of issue 10's prices) slot in
 * by adding columns, not by changing the writers.
 *
 * @param name the JSON field and CSV header; stable (clients key on it)
 * @param value the value of a result: a Long, a String or null
 */
record UsageColumn(String name, Function<UsageBucketRow, Object> value) {

  /**
   * The completions result's fields after {@code start_time, end_time} (which come from the
   * bucket): the grouped fields (null when not grouped by), OpenAI's counts, then device time.
   */
  static final List<UsageColumn> COMPLETIONS =
      List.of(
          new UsageColumn("model", UsageBucketRow::model),
          new UsageColumn(
              "api_key_id", r -> r.apiKeyId() == null ? null : Long.toString(r.apiKeyId())),
          new UsageColumn("device", UsageBucketRow::device),
          new UsageColumn("session_id", UsageBucketRow::sessionId),
          new UsageColumn("input_tokens", r -> r.totals().promptTokens()),
          new UsageColumn("output_tokens", r -> r.totals().completionTokens()),
          new UsageColumn("num_model_requests", r -> r.totals().requests()),
          new UsageColumn("device_time_ns", r -> r.totals().deviceNs()),
          new UsageColumn("prefill_time_ns", r -> r.totals().prefillNs()),
          new UsageColumn("decode_time_ns", r -> r.totals().decodeNs()));

  void writeJson(JsonGenerator g, UsageBucketRow row) throws IOException {
    Object v = value.apply(row);
    if (v == null) {
      g.writeNullField(name);
    } else if (v instanceof Long l) {
      g.writeNumberField(name, l);
    } else {
      g.writeStringField(name, v.toString());
    }
  }

  /** The value as a CSV cell (RFC 4180: quoted when it holds a comma, quote or line break). */
  void writeCsv(StringBuilder sb, UsageBucketRow row) {
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
