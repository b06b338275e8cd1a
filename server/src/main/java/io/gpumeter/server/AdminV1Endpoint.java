package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.gpumeter.billing.Account;
import io.gpumeter.billing.ApiKeyInfo;
import io.gpumeter.billing.ApiKeyStateException;
import io.gpumeter.billing.Balance;
import io.gpumeter.billing.ConflictException;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.CreditGrant;
import io.gpumeter.billing.Invoice;
import io.gpumeter.billing.InvoiceVerification;
import io.gpumeter.billing.KeyScope;
import io.gpumeter.billing.NotFoundException;
import io.gpumeter.billing.Plan;
import io.gpumeter.billing.PriceVersion;
import io.gpumeter.billing.Subscription;
import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.billing.keys.ApiKeys;
import io.netty.buffer.Unpooled;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.util.AsciiString;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.YearMonth;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.StringJoiner;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.function.Consumer;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The operator API under {@code /admin/v1/}: accounts, API keys (with labels), the price book,
 * plans, credits, balances and invoices, as {@code docs/openapi/admin-v1.yaml} documents them
 * (served at {@code GET /admin/v1/openapi.yaml}). Every operation is one call of {@link Accounting}
 * or {@link ApiKeys}, the same the CLI makes, so no money rule is implemented twice.
 *
 * <p>Routing: the paths are a fixed table ({@link #ROUTES}) of templates with {@code {param}}
 * segments; an unknown path is 404 {@code unknown_url}, a known path with another method 405 with
 * {@code Allow}, then the admin token is checked ({@link AdminEndpoint}'s check, given to {@link
 * #handle}), then the input. The table is what {@code AdminOpenApiTest} compares with the OpenAPI
 * document, so neither can drift from the other.
 *
 * <p>Conventions: times are unix seconds ({@code *_at}, {@code effective_*}); money is integer
 * micro-units ({@code *_micros}) with a decimal string beside it; device time is integer
 * nanoseconds; lists are {@code {"object":"list","data":[...]}}. Bodies are JSON objects; unknown
 * fields, wrong types and malformed JSON are 400. Errors: 404 {@code account_not_found}, {@code
 * plan_not_found}, {@code api_key_not_found}, {@code invoice_not_found}; 409 {@code conflict} (name
 * taken, overlapping price versions or subscriptions, invoice final already or an earlier one still
 * open) and {@code api_key_revoked}; 400 {@code invalid_value} for anything else {@link Accounting}
 * refuses (negative price, unknown currency, expiry in the past, month not ended). A refused
 * request changes nothing (each operation is one transaction that validates first).
 *
 * <p>An invoice's id is {@code inv_<account id>_<YYYY-MM>} (one invoice per account per UTC month);
 * an account's invoices are the months with charges or a finalized invoice. The database work runs
 * on the blocking executor.
 */
final class AdminV1Endpoint {
  static final String PREFIX = "/admin/v1/";
  static final String OPENAPI_RESOURCE = "/openapi/admin-v1.yaml";
  private static final Logger log = LoggerFactory.getLogger(AdminV1Endpoint.class);
  private static final AsciiString TEXT_CSV = AsciiString.cached("text/csv; charset=utf-8");
  private static final AsciiString TEXT_HTML = AsciiString.cached("text/html; charset=utf-8");
  private static final AsciiString YAML = AsciiString.cached("application/yaml; charset=utf-8");
  private static final String DEFAULT_CURRENCY = "USD";

  /** One served path and method; {@code template} segments in braces are parameters. */
  record Route(HttpMethod method, String template, Handler handler) {
    String[] segments() {
      return template.substring(1).split("/", -1);
    }
  }

  @FunctionalInterface
  interface Handler {
    void handle(AdminV1Endpoint self, Exchange ex, List<String> params);
  }

  /** Every {@code /admin/v1} route; the OpenAPI document must list exactly these. */
  static final List<Route> ROUTES =
      List.of(
          new Route(HttpMethod.GET, "/admin/v1/openapi.yaml", AdminV1Endpoint::openApi),
          new Route(HttpMethod.GET, "/admin/v1/accounts", AdminV1Endpoint::listAccounts),
          new Route(HttpMethod.POST, "/admin/v1/accounts", AdminV1Endpoint::createAccount),
          new Route(HttpMethod.GET, "/admin/v1/accounts/{name}", AdminV1Endpoint::getAccount),
          new Route(
              HttpMethod.POST,
              "/admin/v1/accounts/{name}/suspend",
              (s, ex, p) -> s.setStatus(ex, p.get(0), true)),
          new Route(
              HttpMethod.POST,
              "/admin/v1/accounts/{name}/resume",
              (s, ex, p) -> s.setStatus(ex, p.get(0), false)),
          new Route(HttpMethod.POST, "/admin/v1/accounts/{name}/plan", AdminV1Endpoint::assignPlan),
          new Route(
              HttpMethod.GET, "/admin/v1/accounts/{name}/credits", AdminV1Endpoint::listCredits),
          new Route(
              HttpMethod.POST, "/admin/v1/accounts/{name}/credits", AdminV1Endpoint::grantCredit),
          new Route(HttpMethod.GET, "/admin/v1/accounts/{name}/balance", AdminV1Endpoint::balance),
          new Route(
              HttpMethod.GET, "/admin/v1/accounts/{name}/invoices", AdminV1Endpoint::listInvoices),
          new Route(HttpMethod.GET, "/admin/v1/keys", AdminV1Endpoint::listKeys),
          new Route(HttpMethod.POST, "/admin/v1/keys", AdminV1Endpoint::createKey),
          new Route(HttpMethod.POST, "/admin/v1/keys/{id}/revoke", AdminV1Endpoint::revokeKey),
          new Route(HttpMethod.GET, "/admin/v1/prices", AdminV1Endpoint::listPrices),
          new Route(HttpMethod.POST, "/admin/v1/prices", AdminV1Endpoint::setPrice),
          new Route(HttpMethod.GET, "/admin/v1/plans", AdminV1Endpoint::listPlans),
          new Route(HttpMethod.POST, "/admin/v1/plans", AdminV1Endpoint::createPlan),
          new Route(HttpMethod.GET, "/admin/v1/invoices/{id}", AdminV1Endpoint::showInvoice),
          new Route(
              HttpMethod.POST,
              "/admin/v1/invoices/{id}/finalize",
              AdminV1Endpoint::finalizeInvoice),
          new Route(
              HttpMethod.GET, "/admin/v1/invoices/{id}/verify", AdminV1Endpoint::verifyInvoice));

  private final Accounting accounting;
  private final ApiKeys keys;
  private final Executor blocking;
  private final Clock clock;
  private final Duration priceMinLead;
  private final byte[] openApi;

  AdminV1Endpoint(
      Accounting accounting, ApiKeys keys, Executor blocking, Clock clock, Duration priceMinLead) {
    this.priceMinLead = priceMinLead;
    this.accounting = accounting;
    this.keys = keys;
    this.blocking = blocking;
    this.clock = clock;
    this.openApi = loadOpenApi();
  }

  private static byte[] loadOpenApi() {
    try (InputStream in = AdminV1Endpoint.class.getResourceAsStream(OPENAPI_RESOURCE)) {
      if (in == null) {
        throw new IllegalStateException(
            OPENAPI_RESOURCE + " is not on the class path (the server jar is built without it)");
      }
      return in.readAllBytes();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /**
   * Answers a request under {@link #PREFIX}: 404, 405, then {@code authorize} (which throws 401),
   * then the operation.
   */
  void handle(Exchange ex, Consumer<Exchange> authorize) {
    String[] segments = ex.path().substring(1).split("/", -1);
    List<String> params = null;
    StringJoiner allowed = new StringJoiner(", ");
    Route matched = null;
    for (Route r : ROUTES) {
      List<String> p = match(r.segments(), segments);
      if (p == null) {
        continue;
      }
      allowed.add(r.method().name());
      if (r.method().equals(ex.request().method())) {
        matched = r;
        params = p;
      }
    }
    if (allowed.length() == 0) {
      throw Routes.unknownUrl(ex);
    }
    if (matched == null) {
      throw new ApiException(
              HttpResponseStatus.METHOD_NOT_ALLOWED,
              ApiException.INVALID_REQUEST,
              "Method "
                  + ex.request().method()
                  + " is not allowed for "
                  + ex.path()
                  + "; use "
                  + allowed
                  + ".",
              null,
              "method_not_allowed")
          .withHeader(HttpHeaderNames.ALLOW, allowed.toString());
    }
    authorize.accept(ex);
    matched.handler().handle(this, ex, params);
  }

  /** The decoded parameter values when {@code path} fits {@code template}, else null. */
  private static List<String> match(String[] template, String[] path) {
    if (template.length != path.length) {
      return null;
    }
    List<String> params = new ArrayList<>(2);
    for (int i = 0; i < template.length; i++) {
      String t = template[i];
      if (t.startsWith("{")) {
        if (path[i].isEmpty()) {
          return null;
        }
        params.add(QueryStringDecoder.decodeComponent(path[i], StandardCharsets.UTF_8));
      } else if (!t.equals(path[i])) {
        return null;
      }
    }
    return params;
  }

  // ------------------------------------------------------------------ operations

  private void openApi(Exchange ex, List<String> params) {
    ex.respond(HttpResponseStatus.OK, Unpooled.wrappedBuffer(openApi), YAML, null, null);
  }

  private void listAccounts(Exchange ex, List<String> params) {
    run(ex, accounting::listAccounts, HttpResponseStatus.OK, list(AdminV1Endpoint::writeAccount));
  }

  private void createAccount(Exchange ex, List<String> params) {
    Body b = Body.parse(ex, Set.of("name", "currency", "postpaid_allowed"));
    String name = b.requiredString("name");
    String currency = b.optionalString("currency");
    if (currency == null) {
      throw ApiException.missing("currency");
    }
    boolean postpaid = b.optionalBoolean("postpaid_allowed", false);
    run(
        ex,
        () -> accounting.createAccount(name, currency, postpaid),
        HttpResponseStatus.CREATED,
        AdminV1Endpoint::writeAccount);
  }

  private void getAccount(Exchange ex, List<String> params) {
    String name = params.get(0);
    run(ex, () -> accounting.account(name), HttpResponseStatus.OK, AdminV1Endpoint::writeAccount);
  }

  private void setStatus(Exchange ex, String name, boolean suspend) {
    run(
        ex,
        () -> suspend ? accounting.suspend(name) : accounting.resume(name),
        HttpResponseStatus.OK,
        AdminV1Endpoint::writeAccount);
  }

  private void assignPlan(Exchange ex, List<String> params) {
    String account = params.get(0);
    Body b = Body.parse(ex, Set.of("plan", "effective_from"));
    String plan = b.requiredString("plan");
    Instant from = b.optionalInstant("effective_from");
    run(
        ex,
        () -> {
          Subscription s = accounting.assignPlan(account, plan, from == null ? now() : from);
          return new Assigned(s, account, plan);
        },
        HttpResponseStatus.OK,
        AdminV1Endpoint::writeSubscription);
  }

  private record Assigned(Subscription subscription, String account, String plan) {}

  private void listCredits(Exchange ex, List<String> params) {
    String account = params.get(0);
    run(
        ex,
        () -> accounting.listCredits(account),
        HttpResponseStatus.OK,
        list((g, c) -> writeCredit(g, account, c)));
  }

  private void grantCredit(Exchange ex, List<String> params) {
    String account = params.get(0);
    Body b = Body.parse(ex, Set.of("kind", "amount_micros", "expires_at", "note"));
    String kind = b.requiredString("kind");
    long amount = b.requiredLong("amount_micros");
    Instant expires = b.optionalInstant("expires_at");
    String note = b.optionalString("note");
    run(
        ex,
        () -> accounting.grantCredit(account, kind, amount, expires, note),
        HttpResponseStatus.CREATED,
        (g, c) -> writeCredit(g, account, c));
  }

  private void balance(Exchange ex, List<String> params) {
    String name = params.get(0);
    run(
        ex,
        () -> new AccountBalance(accounting.account(name), accounting.balance(name)),
        HttpResponseStatus.OK,
        AdminV1Endpoint::writeBalance);
  }

  private record AccountBalance(Account account, Balance balance) {}

  private void listInvoices(Exchange ex, List<String> params) {
    String name = params.get(0);
    run(
        ex,
        () -> accounting.listInvoices(name),
        HttpResponseStatus.OK,
        list(AdminV1Endpoint::writeInvoice));
  }

  private void listKeys(Exchange ex, List<String> params) {
    String account = ex.query("account");
    run(
        ex,
        () -> {
          if (account != null) {
            accounting.account(account); // 404 for an unknown account, not an empty list
          }
          return keys.list(account);
        },
        HttpResponseStatus.OK,
        list(AdminV1Endpoint::writeKey));
  }

  private void createKey(Exchange ex, List<String> params) {
    Body b = Body.parse(ex, Set.of("account", "label", "scope"));
    String account = b.requiredString("account");
    String label = b.optionalString("label");
    String scopeText = b.optionalString("scope");
    KeyScope scope;
    try {
      scope = scopeText == null ? KeyScope.INFERENCE : KeyScope.parse(scopeText);
      ApiKeys.validateLabel(label);
    } catch (IllegalArgumentException e) {
      throw ApiException.invalid(
          scopeText != null && !isScope(scopeText) ? "scope" : "label", e.getMessage() + ".");
    }
    run(
        ex,
        () -> {
          Account a = accounting.account(account); // keys of /admin/v1 need an existing account
          return keys.create(a.name(), scope, label);
        },
        HttpResponseStatus.CREATED,
        AdminV1Endpoint::writeCreatedKey);
  }

  private static boolean isScope(String text) {
    try {
      KeyScope.parse(text);
      return true;
    } catch (IllegalArgumentException e) {
      return false;
    }
  }

  private void revokeKey(Exchange ex, List<String> params) {
    long id = positiveId(params.get(0));
    run(ex, () -> keys.revoke(id), HttpResponseStatus.OK, AdminV1Endpoint::writeKey);
  }

  private void listPrices(Exchange ex, List<String> params) {
    run(ex, accounting::listPrices, HttpResponseStatus.OK, list(AdminV1Endpoint::writePrice));
  }

  private void setPrice(Exchange ex, List<String> params) {
    Body b =
        Body.parse(
            ex,
            Set.of(
                "model",
                "device_class",
                "currency",
                "micros_per_device_second",
                "effective_from",
                "effective_to"));
    String model = b.requiredString("model");
    String deviceClass = b.requiredString("device_class");
    String currency = b.optionalString("currency");
    long micros = b.requiredLong("micros_per_device_second");
    Instant to = b.optionalInstant("effective_to");
    Instant from;
    try {
      // at least pricing.min_lead ahead, so every replica's receipts know it first (invariant 8)
      from = accounting.priceStart(b.optionalInstant("effective_from"), priceMinLead);
    } catch (IllegalArgumentException e) {
      throw ApiException.invalid("effective_from", "effective_from: " + e.getMessage() + ".");
    }
    run(
        ex,
        () ->
            accounting.setPrice(
                model,
                deviceClass,
                currency == null ? DEFAULT_CURRENCY : currency,
                micros,
                from,
                to),
        HttpResponseStatus.CREATED,
        AdminV1Endpoint::writePrice);
  }

  private void listPlans(Exchange ex, List<String> params) {
    run(ex, accounting::listPlans, HttpResponseStatus.OK, list(AdminV1Endpoint::writePlan));
  }

  private void createPlan(Exchange ex, List<String> params) {
    Body b =
        Body.parse(
            ex,
            Set.of(
                "name",
                "included_device_ns",
                "overage_price_micros_per_device_second",
                "class_weights_ppm"));
    String name = b.requiredString("name");
    long included = b.requiredLong("included_device_ns");
    Long overage = b.optionalLong("overage_price_micros_per_device_second");
    Map<String, Long> weights = b.optionalLongMap("class_weights_ppm");
    run(
        ex,
        () -> accounting.createPlan(name, included, overage, weights),
        HttpResponseStatus.CREATED,
        AdminV1Endpoint::writePlan);
  }

  private void showInvoice(Exchange ex, List<String> params) {
    InvoiceId id = InvoiceId.parse(params.get(0));
    String format = ex.query("format") == null ? "json" : ex.query("format");
    if (!format.equals("json") && !format.equals("csv") && !format.equals("html")) {
      throw ApiException.invalid(
          "format", "format must be json, csv or html, was '" + format + "'.");
    }
    CompletableFuture<Invoice> result = submit(() -> invoice(id));
    ex.then(
        result,
        inv -> {
          switch (format) {
            case "csv" -> text(ex, Accounting.format(inv, "csv"), TEXT_CSV);
            case "html" -> text(ex, Accounting.format(inv, "html"), TEXT_HTML);
            default -> ex.respondJson(HttpResponseStatus.OK, g -> writeInvoice(g, inv));
          }
        });
  }

  private static void text(Exchange ex, String body, AsciiString type) {
    ex.respond(
        HttpResponseStatus.OK,
        Unpooled.wrappedBuffer(body.getBytes(StandardCharsets.UTF_8)),
        type,
        null,
        null);
  }

  private void finalizeInvoice(Exchange ex, List<String> params) {
    InvoiceId id = InvoiceId.parse(params.get(0));
    run(
        ex,
        () -> {
          Invoice inv = invoice(id); // 404 for a month without charges or invoice
          return accounting.finalizeInvoice(inv.accountName(), id.month());
        },
        HttpResponseStatus.OK,
        AdminV1Endpoint::writeInvoice);
  }

  private void verifyInvoice(Exchange ex, List<String> params) {
    InvoiceId id = InvoiceId.parse(params.get(0));
    run(
        ex,
        () -> {
          Invoice inv = invoice(id);
          return accounting.verifyInvoice(inv.accountName(), id.month());
        },
        HttpResponseStatus.OK,
        AdminV1Endpoint::writeVerification);
  }

  /** The invoice {@code id} names: one of its account's listed months, else 404. */
  private Invoice invoice(InvoiceId id) {
    Account account =
        accounting.listAccounts().stream()
            .filter(a -> a.id() == id.accountId())
            .findFirst()
            .orElseThrow(() -> invoiceNotFound(id.text()));
    return accounting.listInvoices(account.name()).stream()
        .filter(inv -> inv.period().equals(id.month()))
        .findFirst()
        .orElseThrow(() -> invoiceNotFound(id.text()));
  }

  private static ApiException invoiceNotFound(String id) {
    return new ApiException(
        HttpResponseStatus.NOT_FOUND,
        ApiException.INVALID_REQUEST,
        "No invoice has id '" + id + "' (see GET /admin/v1/accounts/{name}/invoices).",
        "id",
        "invoice_not_found");
  }

  /** {@code inv_<account id>_<YYYY-MM>}. */
  record InvoiceId(String text, long accountId, YearMonth month) {
    static String of(Invoice inv) {
      return "inv_" + inv.accountId() + "_" + inv.period();
    }

    static InvoiceId parse(String text) {
      String[] parts = text.split("_", -1);
      if (parts.length == 3
          && parts[0].equals("inv")
          && !parts[1].isEmpty()
          && parts[1].length() <= 18
          && parts[1].chars().allMatch(c -> c >= '0' && c <= '9')) {
        try {
          return new InvoiceId(text, Long.parseLong(parts[1]), YearMonth.parse(parts[2]));
        } catch (DateTimeParseException e) {
          // falls through to the 400
        }
      }
      throw ApiException.invalid(
          "id",
          "An invoice id is inv_<account id>_<YYYY-MM>, such as inv_3_2026-03; got '"
              + text
              + "'.");
    }
  }

  private static long positiveId(String text) {
    if (!text.isEmpty()
        && text.length() <= 18
        && text.chars().allMatch(c -> c >= '0' && c <= '9')) {
      long id = Long.parseLong(text);
      if (id > 0) {
        return id;
      }
    }
    throw ApiException.invalid(
        "id", "The key id in the path must be a positive integer (see GET /admin/v1/keys).");
  }

  private Instant now() {
    return clock.instant();
  }

  // ------------------------------------------------------------------ running and errors

  @FunctionalInterface
  interface Writer<T> {
    void write(JsonGenerator g, T value) throws IOException;
  }

  private static <T> Writer<List<T>> list(Writer<T> item) {
    return (g, items) -> {
      g.writeStartObject();
      g.writeStringField("object", "list");
      g.writeArrayFieldStart("data");
      for (T t : items) {
        item.write(g, t);
      }
      g.writeEndArray();
      g.writeEndObject();
    };
  }

  private <T> CompletableFuture<T> submit(Supplier<T> work) {
    try {
      return CompletableFuture.supplyAsync(work, blocking)
          .exceptionally(
              e -> {
                throw error(Exchange.unwrap(e));
              });
    } catch (RejectedExecutionException e) {
      throw Authenticator.overloaded();
    }
  }

  private <T> void run(Exchange ex, Supplier<T> work, HttpResponseStatus status, Writer<T> w) {
    ex.then(submit(work), v -> ex.respondJson(status, g -> w.write(g, v)));
  }

  /** Maps what {@link Accounting} and {@link ApiKeys} throw to the API's errors. */
  static ApiException error(Throwable e) {
    if (e instanceof ApiException api) {
      return api;
    }
    if (e instanceof NotFoundException nf) {
      return new ApiException(
          HttpResponseStatus.NOT_FOUND,
          ApiException.INVALID_REQUEST,
          nf.getMessage() + ".",
          nf.resource(),
          nf.resource() + "_not_found");
    }
    if (e instanceof ConflictException c) {
      return new ApiException(
          HttpResponseStatus.CONFLICT,
          ApiException.INVALID_REQUEST,
          c.getMessage() + ".",
          null,
          "conflict");
    }
    if (e instanceof ApiKeyStateException state) {
      return AdminEndpoint.keyStateError(state, "/admin/v1/keys");
    }
    if (e instanceof IllegalArgumentException) {
      return ApiException.invalid(null, e.getMessage() + ".");
    }
    log.warn("admin v1 operation failed", e);
    return new ApiException(
        HttpResponseStatus.SERVICE_UNAVAILABLE,
        ApiException.SERVER,
        "The billing database is unavailable; nothing was changed that is not reported; retry"
            + " later.",
        null,
        CompletionsEndpoint.BILLING_UNAVAILABLE);
  }

  // ------------------------------------------------------------------ request bodies

  /** A JSON object body with only known fields. */
  static final class Body {
    private final JsonNode root;

    private Body(JsonNode root) {
      this.root = root;
    }

    static Body parse(Exchange ex, Set<String> allowed) {
      JsonNode root;
      try {
        root = Json.read(ex.body());
      } catch (IOException e) {
        root = null;
      }
      if (root == null || !root.isObject()) {
        throw new ApiException(
            HttpResponseStatus.BAD_REQUEST,
            ApiException.INVALID_REQUEST,
            "The body must be a JSON object (see docs/openapi/admin-v1.yaml).",
            null,
            "invalid_json");
      }
      for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
        String name = it.next();
        if (!allowed.contains(name)) {
          throw ApiException.invalid(name, "Unrecognized request argument supplied: " + name);
        }
      }
      return new Body(root);
    }

    private JsonNode present(String name) {
      JsonNode n = root.get(name);
      return n == null || n.isNull() ? null : n;
    }

    String requiredString(String name) {
      String s = optionalString(name);
      if (s == null) {
        throw ApiException.missing(name);
      }
      return s;
    }

    String optionalString(String name) {
      JsonNode n = present(name);
      if (n == null) {
        return null;
      }
      if (!n.isTextual()) {
        throw ApiException.wrongType(name, "a string", n.getNodeType().toString());
      }
      return n.asText();
    }

    long requiredLong(String name) {
      JsonNode n = present(name);
      if (n == null) {
        throw ApiException.missing(name);
      }
      return integer(name, n);
    }

    Instant optionalInstant(String name) {
      JsonNode n = present(name);
      if (n == null) {
        return null;
      }
      long seconds = integer(name, n);
      if (seconds < 0 || seconds > 253_402_300_799L) { // 9999-12-31T23:59:59Z
        throw ApiException.invalid(
            name, "'" + name + "' must be unix seconds between 0 and 253402300799.");
      }
      return Instant.ofEpochSecond(seconds);
    }

    Long optionalLong(String name) {
      JsonNode n = present(name);
      return n == null ? null : integer(name, n);
    }

    /** An object of integers by name (empty when absent), in the order given. */
    Map<String, Long> optionalLongMap(String name) {
      JsonNode n = present(name);
      Map<String, Long> out = new java.util.LinkedHashMap<>();
      if (n == null) {
        return out;
      }
      if (!n.isObject()) {
        throw ApiException.wrongType(name, "an object", n.getNodeType().toString());
      }
      for (Iterator<Map.Entry<String, JsonNode>> it = n.fields(); it.hasNext(); ) {
        Map.Entry<String, JsonNode> e = it.next();
        out.put(e.getKey(), integer(name + "." + e.getKey(), e.getValue()));
      }
      return out;
    }

    boolean optionalBoolean(String name, boolean absent) {
      JsonNode n = present(name);
      if (n == null) {
        return absent;
      }
      if (!n.isBoolean()) {
        throw ApiException.wrongType(name, "a boolean", n.getNodeType().toString());
      }
      return n.booleanValue();
    }

    private static long integer(String name, JsonNode n) {
      if (!n.isIntegralNumber()) {
        throw ApiException.wrongType(name, "an integer", n.getNodeType().toString());
      }
      if (!n.canConvertToLong()) {
        throw ApiException.invalid(name, "'" + name + "' is out of range.");
      }
      return n.longValue();
    }
  }

  // ------------------------------------------------------------------ response objects

  private static void seconds(JsonGenerator g, String field, Instant t) throws IOException {
    if (t == null) {
      g.writeNullField(field);
    } else {
      g.writeNumberField(field, t.getEpochSecond());
    }
  }

  private static void money(JsonGenerator g, String field, long micros) throws IOException {
    g.writeNumberField(field + "_micros", micros);
    g.writeStringField(field, Accounting.decimal(micros));
  }

  static void writeAccount(JsonGenerator g, Account a) throws IOException {
    g.writeStartObject();
    g.writeStringField("object", "account");
    g.writeNumberField("id", a.id());
    g.writeStringField("name", a.name());
    g.writeStringField("currency", a.currency());
    g.writeStringField("status", a.status());
    g.writeBooleanField("postpaid_allowed", a.postpaidAllowed());
    seconds(g, "created_at", a.createdAt());
    g.writeEndObject();
  }

  private static void keyFields(
      JsonGenerator g,
      long id,
      String prefix,
      String account,
      String label,
      KeyScope scope,
      Instant created)
      throws IOException {
    g.writeStringField("object", "api_key");
    g.writeNumberField("id", id);
    g.writeStringField("prefix", prefix);
    g.writeStringField("account", account);
    if (label == null) {
      g.writeNullField("label");
    } else {
      g.writeStringField("label", label);
    }
    g.writeStringField("scope", scope.dbName());
    seconds(g, "created_at", created);
  }

  static void writeKey(JsonGenerator g, ApiKeyInfo k) throws IOException {
    g.writeStartObject();
    keyFields(g, k.keyId(), k.prefix(), k.accountName(), k.label(), k.scope(), k.createdAt());
    seconds(g, "revoked_at", k.revokedAt());
    g.writeEndObject();
  }

  static void writeCreatedKey(JsonGenerator g, CreatedApiKey k) throws IOException {
    g.writeStartObject();
    keyFields(g, k.keyId(), k.prefix(), k.accountName(), k.label(), k.scope(), k.createdAt());
    g.writeNullField("revoked_at");
    g.writeStringField("key", k.plaintext());
    g.writeEndObject();
  }

  static void writePrice(JsonGenerator g, PriceVersion p) throws IOException {
    g.writeStartObject();
    g.writeStringField("object", "price");
    g.writeNumberField("id", p.id());
    g.writeStringField("model", p.model());
    g.writeStringField("device_class", p.deviceClass());
    g.writeStringField("currency", p.currency());
    g.writeNumberField("micros_per_device_second", p.priceMicrosPerSecond());
    g.writeStringField("per_device_second", Accounting.decimal(p.priceMicrosPerSecond()));
    seconds(g, "effective_from", p.from());
    seconds(g, "effective_to", p.to());
    g.writeEndObject();
  }

  static void writePlan(JsonGenerator g, Plan p) throws IOException {
    g.writeStartObject();
    g.writeStringField("object", "plan");
    g.writeNumberField("id", p.id());
    g.writeStringField("name", p.name());
    g.writeNumberField("included_device_ns", p.includedNs());
    if (p.overagePriceMicrosPerSecond() == null) {
      g.writeNullField("overage_price_micros_per_device_second");
      g.writeNullField("overage_price_per_device_second");
    } else {
      g.writeNumberField("overage_price_micros_per_device_second", p.overagePriceMicrosPerSecond());
      g.writeStringField(
          "overage_price_per_device_second", Accounting.decimal(p.overagePriceMicrosPerSecond()));
    }
    g.writeObjectFieldStart("class_weights_ppm");
    for (Map.Entry<String, Long> w : new java.util.TreeMap<>(p.classWeightsPpm()).entrySet()) {
      g.writeNumberField(w.getKey(), w.getValue());
    }
    g.writeEndObject();
    g.writeEndObject();
  }

  private static void writeSubscription(JsonGenerator g, Assigned a) throws IOException {
    g.writeStartObject();
    g.writeStringField("object", "subscription");
    g.writeNumberField("id", a.subscription().id());
    g.writeStringField("account", a.account());
    g.writeStringField("plan", a.plan());
    seconds(g, "effective_from", a.subscription().from());
    seconds(g, "effective_to", a.subscription().to());
    g.writeEndObject();
  }

  static void writeCredit(JsonGenerator g, String account, CreditGrant c) throws IOException {
    g.writeStartObject();
    g.writeStringField("object", "credit");
    g.writeNumberField("id", c.id());
    g.writeStringField("account", account);
    g.writeStringField("kind", c.source());
    money(g, "granted", c.amountMicros());
    money(g, "remaining", Accounting.roundToMicros(c.remainingNanoMicros()));
    g.writeStringField("remaining_exact_nano_micros", c.remainingNanoMicros().toString());
    seconds(g, "expires_at", c.expiresAt());
    seconds(g, "granted_at", c.grantedAt());
    g.writeStringField("note", c.note());
    g.writeEndObject();
  }

  private static void writeBalance(JsonGenerator g, AccountBalance ab) throws IOException {
    Account a = ab.account();
    Balance b = ab.balance();
    g.writeStartObject();
    g.writeStringField("object", "balance");
    g.writeStringField("account", a.name());
    g.writeStringField("currency", b.currency());
    g.writeStringField("status", a.status());
    g.writeBooleanField("postpaid_allowed", a.postpaidAllowed());
    money(g, "credit_remaining", b.micros());
    g.writeStringField("credit_remaining_exact_nano_micros", b.exactNanoMicros().toString());
    g.writeNumberField("allowance_included_device_ns", b.allowanceIncludedNs());
    g.writeNumberField("allowance_used_device_ns", b.allowanceUsedNs());
    g.writeEndObject();
  }

  /** The invoice as {@code invoice show --format json} writes it, with its {@code id} first. */
  static void writeInvoice(JsonGenerator g, Invoice inv) throws IOException {
    ObjectNode body = (ObjectNode) Json.MAPPER.readTree(Accounting.format(inv, "json"));
    ObjectNode out = Json.MAPPER.createObjectNode();
    out.put("object", "invoice");
    out.put("id", InvoiceId.of(inv));
    out.setAll(body);
    g.writeTree(out);
  }

  private static void writeVerification(JsonGenerator g, InvoiceVerification v) throws IOException {
    g.writeStartObject();
    g.writeStringField("object", "invoice.verification");
    g.writeStringField("id", InvoiceId.of(v.stated()));
    g.writeBooleanField("ok", v.ok());
    g.writeArrayFieldStart("problems");
    for (String p : v.problems()) {
      g.writeString(p);
    }
    g.writeEndArray();
    g.writeNumberField("unpriced_records", v.unpricedRecords());
    g.writeNumberField("stated_total_micros", v.stated().totalMicros());
    g.writeNumberField("recomputed_total_micros", v.recomputed().totalMicros());
    g.writeEndObject();
  }
}
