package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.Invoice;
import io.gpumeter.billing.accounting.Accounting;
import io.netty.buffer.Unpooled;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.util.AsciiString;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.YearMonth;
import java.time.ZoneOffset;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.Executor;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code GET /v1/organization/invoices} and {@code GET /v1/organization/invoices/{id}
 * [?format=json|csv|html]}: the caller's own account's invoices, from billing-api {@link
 * Accounting} and its {@code InvoiceFormats} (server/README.md, "Invoices").
 *
 * <p><b>Scope:</b> {@code account_admin} keys only; an inference key gets 403 {@code
 * insufficient_scope} (an invoice is the whole account's spending).
 *
 * <p><b>Ids:</b> an invoice is one account's one UTC month, so its id is {@code
 * inv_<account_id>_<YYYY-MM>}. An id of another account, a malformed id and a month without an
 * invoice (no charges, not finalized) are all the same 404 {@code invoice_not_found}, so an id says
 * nothing about whether another account exists or was billed.
 */
final class InvoicesEndpoint {
  static final String PATH = "/v1/organization/invoices";
  static final String PREFIX = PATH + "/";
  static final AsciiString TEXT_HTML = AsciiString.cached("text/html; charset=utf-8");

  private static final Pattern ID = Pattern.compile("inv_([0-9]{1,18})_([0-9]{4}-[0-9]{2})");
  private static final Set<String> FORMATS = Set.of("json", "csv", "html");

  private final Authenticator auth;
  private final Accounting accounting;
  private final Executor blocking;

  InvoicesEndpoint(Authenticator auth, Accounting accounting, Executor blocking) {
    this.auth = auth;
    this.accounting = accounting;
    this.blocking = blocking;
  }

  /** The id of {@code account}'s invoice for {@code month}. */
  static String id(long accountId, YearMonth month) {
    return "inv_" + accountId + "_" + month;
  }

  void list(Exchange ex) {
    ex.then(
        auth.authenticate(ex),
        principal -> {
          OrganizationReads.requireAccountAdmin(principal, "the invoices");
          OrganizationReads.onlyParameters(ex, Set.of());
          ex.then(
              OrganizationReads.read(
                  blocking, "The invoices", () -> accounting.listInvoices(principal.accountName())),
              invoices -> ex.respondJson(HttpResponseStatus.OK, g -> writeList(g, invoices)));
        });
  }

  void show(Exchange ex, String id) {
    ex.then(auth.authenticate(ex), principal -> show(ex, principal, id));
  }

  private void show(Exchange ex, ApiKeyPrincipal principal, String id) {
    OrganizationReads.requireAccountAdmin(principal, "the invoices");
    OrganizationReads.onlyParameters(ex, Set.of("format"));
    String format = ex.query("format") == null ? "json" : ex.query("format");
    if (!FORMATS.contains(format)) {
      throw ApiException.invalid(
          "format",
          "'format' must be json, csv or html; got '"
              + (format.length() > 20 ? format.substring(0, 20) + "..." : format)
              + "'.");
    }
    YearMonth month = monthOf(principal, id);
    ex.then(
        OrganizationReads.read(
            blocking,
            "The invoice",
            () -> {
              Invoice inv = accounting.invoice(principal.accountName(), month);
              if (!inv.isFinal() && inv.lines().isEmpty()) {
                throw notFound(id);
              }
              return Accounting.format(inv, format);
            }),
        text ->
            ex.respond(
                HttpResponseStatus.OK,
                Unpooled.copiedBuffer(text, StandardCharsets.UTF_8),
                switch (format) {
                  case "csv" -> UsageCompletionsEndpoint.TEXT_CSV;
                  case "html" -> TEXT_HTML;
                  default -> Exchange.APPLICATION_JSON;
                },
                null,
                null));
  }

  /** The month the id names, if it is the caller's account's; else 404. */
  private static YearMonth monthOf(ApiKeyPrincipal principal, String id) {
    Matcher m = ID.matcher(id);
    if (!m.matches() || !m.group(1).equals(Long.toString(principal.accountId()))) {
      throw notFound(id);
    }
    try {
      return YearMonth.parse(m.group(2));
    } catch (java.time.format.DateTimeParseException e) {
      throw notFound(id);
    }
  }

  private static ApiException notFound(String id) {
    return new ApiException(
        HttpResponseStatus.NOT_FOUND,
        ApiException.INVALID_REQUEST,
        "No invoice with id '"
            + (id.length() > 64 ? id.substring(0, 64) + "..." : id)
            + "' in this account. GET "
            + PATH
            + " lists them.",
        "id",
        "invoice_not_found");
  }

  private static void writeList(JsonGenerator g, List<Invoice> invoices) throws IOException {
    g.writeStartObject();
    g.writeStringField("object", "list");
    g.writeArrayFieldStart("data");
    // newest first, as the request log
    for (int i = invoices.size() - 1; i >= 0; i--) {
      Invoice inv = invoices.get(i);
      g.writeStartObject();
      g.writeStringField("object", "invoice");
      g.writeStringField("id", id(inv.accountId(), inv.period()));
      g.writeStringField("account", inv.accountName());
      g.writeStringField("period", inv.period().toString());
      g.writeNumberField(
          "period_start", inv.period().atDay(1).atStartOfDay().toEpochSecond(ZoneOffset.UTC));
      g.writeNumberField(
          "period_end",
          inv.period().plusMonths(1).atDay(1).atStartOfDay().toEpochSecond(ZoneOffset.UTC));
      g.writeStringField("currency", inv.currency().toLowerCase(Locale.ROOT));
      g.writeStringField("status", inv.isFinal() ? "final" : "draft");
      if (inv.isFinal()) {
        g.writeNumberField("finalized_at", inv.finalizedAt().getEpochSecond());
      } else {
        g.writeNullField("finalized_at");
      }
      g.writeNumberField("line_count", inv.lines().size());
      g.writeNumberField("total_micros", inv.totalMicros());
      g.writeStringField("total", Accounting.decimal(inv.totalMicros()));
      g.writeEndObject();
    }
    g.writeEndArray();
    g.writeBooleanField("has_more", false);
    g.writeEndObject();
  }
}
