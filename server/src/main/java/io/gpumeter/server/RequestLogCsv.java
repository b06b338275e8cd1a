package io.gpumeter.server;

import io.gpumeter.billing.ChargedRequest;
import io.gpumeter.billing.accounting.Accounting;
import io.netty.buffer.ByteBufUtil;
import io.netty.handler.codec.http.DefaultHttpHeaders;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaders;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.util.List;
import java.util.Locale;

/**
 * The request log ({@code GET /v1/organization/requests}) as CSV: {@code format=csv}, or {@code
 * Accept: text/csv} without {@code format}. One page, as in JSON (at most 100 rows, so built in
 * memory): a header row with the JSON field names, one row per request, empty for null; the cursor
 * of the next page in the headers {@code x-gpumeter-last-id} and {@code x-gpumeter-has-more}
 * (server/README.md, "Customer reads").
 */
final class RequestLogCsv {
  private RequestLogCsv() {}

  static final String HEADER =
      "request_id,created_at,finished_at,model,api_key_id,session_id,status,prompt_tokens,"
          + "completion_tokens,device_time_ns,prefill_time_ns,decode_time_ns,steps,batch_company,"
          + "batch_company_sum,kv_byte_ns,peak_kv_bytes,cost_micros,cost,cost_exact_nano_micros,price_version,currency,"
          + "voided,void_reason,"
          + ChargedColumns.HEADER;

  /**
   * Whether the caller asked for CSV.
   *
   * @throws ApiException 400 naming {@code format} unless it is json or csv
   */
  static boolean wanted(Exchange ex) {
    String format = ex.query("format");
    if (format != null) {
      return switch (format) {
        case "csv" -> true;
        case "json" -> false;
        default ->
            throw ApiException.invalid(
                "format",
                "'format' must be json or csv; got '"
                    + (format.length() > 20 ? format.substring(0, 20) + "..." : format)
                    + "'.");
      };
    }
    String accept = ex.request().headers().get(HttpHeaderNames.ACCEPT);
    return accept != null && accept.toLowerCase(Locale.ROOT).contains("text/csv");
  }

  /** Answers with the page of {@code rows} (one more than {@code limit} means more follow). */
  static void respond(Exchange ex, List<ChargedRequest> rows, int limit) {
    List<ChargedRequest> page = rows.size() > limit ? rows.subList(0, limit) : rows;
    StringBuilder sb = new StringBuilder(HEADER.length() + 2 + page.size() * 256);
    sb.append(HEADER).append("\r\n");
    for (ChargedRequest r : page) {
      field(sb, r.requestId()).append(',');
      sb.append(r.startedAt().getEpochSecond()).append(',');
      sb.append(r.finishedAt().getEpochSecond()).append(',');
      field(sb, r.model()).append(',');
      sb.append(r.apiKeyId()).append(',');
      field(sb, r.sessionId()).append(',');
      sb.append(RequestsEndpoint.status(r.status())).append(',');
      sb.append(r.promptTokens()).append(',');
      sb.append(r.completionTokens()).append(',');
      sb.append(r.deviceNs()).append(',');
      sb.append(r.prefillNs()).append(',');
      sb.append(r.decodeNs()).append(',');
      sb.append(r.steps()).append(',');
      boolean company = r.batchCompany() != null;
      sb.append(company ? r.batchCompany().toPlainString() : "").append(',');
      sb.append(company ? r.batchCompanySum().toString() : "").append(',');
      sb.append(r.kvByteNs()).append(',');
      sb.append(r.peakKvBytes()).append(',');
      boolean priced = r.costMicros() != null;
      sb.append(priced ? r.costMicros().toString() : "").append(',');
      sb.append(priced ? Accounting.decimal(r.costMicros()) : "").append(',');
      sb.append(priced ? r.costNanoMicros().toString() : "").append(',');
      sb.append(priced ? r.priceVersionId().toString() : "").append(',');
      sb.append(r.currency().toLowerCase(Locale.ROOT)).append(',');
      sb.append(r.voidReason() != null).append(',');
      sb.append(r.voidReason() == null ? "" : r.voidReason());
      ChargedColumns.writeCsv(sb, r.charged());
      sb.append("\r\n");
    }
    HttpHeaders headers = new DefaultHttpHeaders();
    headers.set("x-gpumeter-has-more", Boolean.toString(rows.size() > limit));
    if (!page.isEmpty()) {
      headers.set("x-gpumeter-last-id", page.get(page.size() - 1).requestId());
    }
    ex.respond(
        HttpResponseStatus.OK,
        ByteBufUtil.writeUtf8(ex.alloc(), sb),
        UsageCompletionsEndpoint.TEXT_CSV,
        headers);
  }

  /** A text field, quoted (RFC 4180) when it holds a comma, a quote or a line break. */
  private static StringBuilder field(StringBuilder sb, String v) {
    if (v.indexOf(',') < 0 && v.indexOf('"') < 0 && v.indexOf('\n') < 0 && v.indexOf('\r') < 0) {
      return sb.append(v);
    }
    return sb.append('"').append(v.replace("\"", "\"\"")).append('"');
  }
}
