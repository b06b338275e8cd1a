package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.ChargedRequest;
import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.billing.usage.UsageQueries;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.io.IOException;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.Executor;

/**
 * {@code GET /v1/organization/requests?limit=N[&before=REQUEST_ID]}: the caller's charged requests,
 * newest first, from the ledger (server/README.md, "Request log").
 *
 * <p><b>Scope</b> ({@link OrganizationReads}): an {@code inference} key lists its own requests, an
 * {@code account_admin} key those of every key of its account; a cursor naming a request the caller
 * cannot see is a 400 naming {@code before}, the same answer as an unknown one.
 *
 * <p><b>Paging:</b> {@code before} is the {@code last_id} of the page before; the order is {@code
 * (finished_at, request_id)} descending, a total order, so pages neither repeat nor skip
 * (billing-api {@code usage.RequestLog}). One row more than asked is read to say {@code has_more}.
 */
final class RequestsEndpoint {
  static final String PATH = "/v1/organization/requests";
  static final int DEFAULT_LIMIT = 20;
  static final int MAX_LIMIT = 100;

  /** Request ids are generated ({@code cmpl-...}); anything this long is not one. */
  static final int MAX_CURSOR_LENGTH = 256;

  private static final Set<String> PARAMS = Set.of("limit", "before", "format");

  private final Authenticator auth;
  private final UsageQueries usage;
  private final Executor blocking;

  RequestsEndpoint(Authenticator auth, UsageQueries usage, Executor blocking) {
    this.auth = auth;
    this.usage = usage;
    this.blocking = blocking;
  }

  void handle(Exchange ex) {
    ex.then(auth.authenticate(ex), principal -> list(ex, principal));
  }

  private void list(Exchange ex, ApiKeyPrincipal principal) {
    OrganizationReads.onlyParameters(ex, PARAMS);
    int limit = limit(ex.query("limit"));
    boolean csv = RequestLogCsv.wanted(ex);
    String before = ex.query("before");
    if (before != null && (before.isBlank() || before.length() > MAX_CURSOR_LENGTH)) {
      throw ApiException.invalid(
          "before",
          "'before' must be the request_id of a request in your log (the last_id of the page"
              + " before).");
    }
    Long onlyKey = OrganizationReads.onlyKey(principal);
    ex.then(
        OrganizationReads.read(
            blocking,
            "The request log",
            () -> {
              Optional<List<ChargedRequest>> page =
                  usage.requests(principal.accountId(), onlyKey, limit + 1, before);
              if (page.isEmpty()) {
                throw ApiException.invalid(
                    "before",
                    "'before' names no request in "
                        + (onlyKey == null ? "this account's" : "this key's")
                        + " log (unknown, or older than the records kept).");
              }
              return page.get();
            }),
        rows -> {
          if (csv) {
            RequestLogCsv.respond(ex, rows, limit);
          } else {
            ex.respondJson(HttpResponseStatus.OK, g -> write(g, rows, limit));
          }
        });
  }

  /**
   * @throws ApiException 400 naming {@code limit} unless it is an integer from 1 to {@value
   *     #MAX_LIMIT}
   */
  static int limit(String text) {
    if (text == null) {
      return DEFAULT_LIMIT;
    }
    long n = -1;
    if (!text.isEmpty() && text.length() <= 9 && text.chars().allMatch(c -> c >= '0' && c <= '9')) {
      n = Long.parseLong(text);
    }
    if (n < 1 || n > MAX_LIMIT) {
      throw ApiException.invalid(
          "limit",
          "'limit' must be an integer from 1 to "
              + MAX_LIMIT
              + "; got '"
              + (text.length() > 20 ? text.substring(0, 20) + "..." : text)
              + "'.");
    }
    return (int) n;
  }

  private static void write(JsonGenerator g, List<ChargedRequest> rows, int limit)
      throws IOException {
    List<ChargedRequest> page = rows.size() > limit ? rows.subList(0, limit) : rows;
    g.writeStartObject();
    g.writeStringField("object", "list");
    g.writeArrayFieldStart("data");
    for (ChargedRequest r : page) {
      writeRequest(g, r);
    }
    g.writeEndArray();
    if (page.isEmpty()) {
      g.writeNullField("first_id");
      g.writeNullField("last_id");
    } else {
      g.writeStringField("first_id", page.get(0).requestId());
      g.writeStringField("last_id", page.get(page.size() - 1).requestId());
    }
    g.writeBooleanField("has_more", rows.size() > limit);
    g.writeEndObject();
  }

  private static void writeRequest(JsonGenerator g, ChargedRequest r) throws IOException {
    g.writeStartObject();
    g.writeStringField("object", "request");
    g.writeStringField("request_id", r.requestId());
    g.writeNumberField("created_at", r.startedAt().getEpochSecond());
    g.writeNumberField("finished_at", r.finishedAt().getEpochSecond());
    g.writeStringField("model", r.model());
    g.writeNumberField("api_key_id", r.apiKeyId());
    g.writeStringField("session_id", r.sessionId());
    g.writeStringField("status", status(r.status()));
    g.writeNumberField("prompt_tokens", r.promptTokens());
    g.writeNumberField("completion_tokens", r.completionTokens());
    g.writeNumberField("device_time_ns", r.deviceNs());
    g.writeNumberField("prefill_time_ns", r.prefillNs());
    g.writeNumberField("decode_time_ns", r.decodeNs());
    g.writeNumberField("steps", r.steps());
    // Σ (sequences in the step − 1) over its steps, divided by its steps (V19); null: not measured
    if (r.batchCompany() == null) {
      g.writeNullField("batch_company");
      g.writeNullField("batch_company_sum");
    } else {
      g.writeNumberField("batch_company", r.batchCompany());
      g.writeNumberField("batch_company_sum", r.batchCompanySum());
    }
    // KV memory-time (issue 18): bytes held integrated over its steps, and the most held at once
    g.writeNumberField("kv_byte_ns", r.kvByteNs());
    g.writeNumberField("peak_kv_bytes", r.peakKvBytes());
    if (r.costMicros() == null) {
      g.writeNullField("cost_micros");
      g.writeNullField("cost");
      g.writeNullField("cost_exact_nano_micros");
      g.writeNullField("price_version");
    } else {
      g.writeNumberField("cost_micros", r.costMicros());
      g.writeStringField("cost", Accounting.decimal(r.costMicros()));
      g.writeStringField("cost_exact_nano_micros", r.costNanoMicros().toString());
      g.writeNumberField("price_version", r.priceVersionId());
    }
    g.writeStringField("currency", r.currency().toLowerCase(java.util.Locale.ROOT));
    g.writeBooleanField("voided", r.voidReason() != null);
    if (r.voidReason() == null) {
      g.writeNullField("void_reason");
    } else {
      g.writeStringField("void_reason", r.voidReason());
    }
    ChargedColumns.writeJson(g, r.charged());
    g.writeEndObject();
  }

  /**
   * The stored status in the contract's words: {@code ok} is {@code finished}, {@code timeout} is
   * {@code timed_out}; {@code cancelled} and {@code failed} are as stored.
   */
  static String status(String stored) {
    return switch (stored) {
      case "ok" -> "finished";
      case "timeout" -> "timed_out";
      default -> stored;
    };
  }
}
