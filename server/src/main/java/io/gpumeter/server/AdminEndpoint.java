package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.billing.ApiKeyInfo;
import io.gpumeter.billing.ApiKeyStateException;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.KeyScope;
import io.gpumeter.billing.ReconciliationReport;
import io.gpumeter.billing.RotatedApiKey;
import io.gpumeter.billing.SetAsideReplay;
import io.gpumeter.billing.ShippingLagException;
import io.gpumeter.billing.keys.ApiKeys;
import io.gpumeter.billing.reconcile.Reconciliation;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.util.Iterator;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The admin API, under {@code /admin/}: {@code GET /admin/reconcile?from=ISO&to=ISO[&replica=UUID]}
 * (the whole ledger with drift per replica, or one replica's; 400 {@code invalid_request} naming
 * {@code replica} for a value that is not a UUID); {@code POST /admin/replay} (re-applies the
 * charges set aside: quarantined outbox segments and dead letters, idempotently; answers what was
 * applied, already present and still refused); and API keys: {@code GET
 * /admin/keys[?account=NAME]}, {@code POST /admin/keys} with {@code {"account": NAME}} and
 * optionally {@code "scope": "inference"|"account_admin"} (billing-api README, "Key scopes"),
 * {@code POST /admin/keys/{id}/revoke}, {@code POST /admin/keys/{id}/rotate}; models: {@code POST
 * /admin/models/load}, {@code POST /admin/models/{id}/unload} ({@link ModelAdminEndpoint}); and the
 * operator API under {@code /admin/v1/} ({@link AdminV1Endpoint}), behind the same token check.
 *
 * <p>Enabled only when {@code admin.token} is configured; otherwise every {@code /admin/} path is a
 * 404 as if it did not exist. Requests carry {@code Authorization: Bearer <admin.token>}; the token
 * is compared by SHA-256 digest in constant time. API keys are not admin tokens. A missing or wrong
 * token counts as a failed authentication of the client's address ({@link AuthThrottle}). A request
 * without an {@code Authorization} header may instead carry an operator console session cookie
 * ({@link ConsoleSessions}); its state-changing requests need the session's CSRF token, checked by
 * {@link Routes} before this endpoint runs.
 *
 * <p>Keys are shown by id, prefix, account and created/revoked time, never their secret; the secret
 * of a created or rotated key is in that one response only. A revocation (or rotation) made here
 * drops the key from this server's authentication cache before the response leaves, so this server
 * refuses the key from the next request on. Rotation revokes the old key at once (no grace period;
 * for a gradual switch, create a second key and revoke the first later). Errors: 404 {@code
 * api_key_not_found}, 409 {@code api_key_revoked}, 400 for a bad id, body or account name.
 *
 * <p>Reconcile flushes this server's reconciliation totals first (so the current minute is in the
 * database), then reports measured device time against the ledger over {@code [from, to)} widened
 * to whole minutes (billing-api/README.md, Reconciliation). The queries run on the blocking
 * executor.
 */
final class AdminEndpoint {
  private static final Logger log = LoggerFactory.getLogger(AdminEndpoint.class);
  private static final String KEYS = "/admin/keys";
  static final Duration DEFAULT_WINDOW = Duration.ofHours(1);
  static final Duration MAX_WINDOW = Duration.ofDays(366);

  private final byte[] tokenDigest; // null: disabled
  private final Reconciliation reconciliation;
  private final ApiKeys keys;
  private final AuthThrottle throttle;
  private final Supplier<SetAsideReplay> replay;
  private final Executor blocking;
  private final Clock clock;
  private final ModelAdminEndpoint models;
  private final AdminV1Endpoint v1;

  AdminEndpoint(
      String token,
      Reconciliation reconciliation,
      ApiKeys keys,
      AuthThrottle throttle,
      Supplier<SetAsideReplay> replay,
      Executor blocking,
      Clock clock,
      ModelAdminEndpoint models,
      AdminV1Endpoint v1) {
    this.tokenDigest = token == null ? null : sha256(token);
    this.reconciliation = reconciliation;
    this.keys = keys;
    this.throttle = throttle;
    this.replay = replay;
    this.blocking = blocking;
    this.clock = clock;
    this.models = models;
    this.v1 = v1;
  }

  boolean enabled() {
    return tokenDigest != null;
  }

  void handle(Exchange ex) {
    if (!enabled()) {
      throw Routes.unknownUrl(ex);
    }
    String path = ex.path();
    if (path.startsWith(AdminV1Endpoint.PREFIX)) {
      v1.handle(ex, this::authorize);
      return;
    }
    if (path.equals("/admin/reconcile")) {
      Routes.allow(ex, HttpMethod.GET, "GET");
      authorize(ex);
      reconcile(ex);
      return;
    }
    if (path.equals(KEYS)) {
      HttpMethod method = ex.request().method();
      if (method.equals(HttpMethod.GET)) {
        authorize(ex);
        listKeys(ex);
      } else if (method.equals(HttpMethod.POST)) {
        authorize(ex);
        createKey(ex);
      } else {
        Routes.allow(ex, HttpMethod.GET, "GET, POST");
      }
      return;
    }
    if (path.startsWith(KEYS + "/")) {
      String rest = path.substring(KEYS.length() + 1);
      int slash = rest.indexOf('/');
      String action = slash < 0 ? "" : rest.substring(slash + 1);
      if (action.equals("revoke") || action.equals("rotate")) {
        Routes.allow(ex, HttpMethod.POST, "POST");
        authorize(ex);
        long id = keyId(rest.substring(0, slash));
        if (action.equals("revoke")) {
          keyOperation(ex, () -> keys.revoke(id), HttpResponseStatus.OK, AdminEndpoint::writeKey);
        } else {
          keyOperation(
              ex, () -> keys.rotate(id), HttpResponseStatus.OK, AdminEndpoint::writeRotation);
        }
        return;
      }
    }
    if (path.startsWith(ModelAdminEndpoint.PREFIX)) {
      Routes.allow(ex, HttpMethod.POST, "POST");
      authorize(ex);
      models.handle(ex);
      return;
    }
    if (path.equals("/admin/replay")) {
      Routes.allow(ex, HttpMethod.POST, "POST");
      authorize(ex);
      replay(ex);
      return;
    }
    throw Routes.unknownUrl(ex);
  }

  private void replay(Exchange ex) {
    CompletableFuture<SetAsideReplay> result;
    try {
      result = CompletableFuture.supplyAsync(replay, blocking);
    } catch (RejectedExecutionException e) {
      throw Authenticator.overloaded();
    }
    ex.then(
        result.exceptionally(
            e -> {
              log.warn("replay of set-aside charges failed", Exchange.unwrap(e));
              throw new ApiException(
                  HttpResponseStatus.SERVICE_UNAVAILABLE,
                  ApiException.SERVER,
                  "The set-aside charges cannot be replayed right now (the billing database is"
                      + " unavailable); what was applied stays applied; retry later.",
                  null,
                  CompletionsEndpoint.BILLING_UNAVAILABLE);
            }),
        r -> {
          log.info("admin replay from {}: {}", ex.remoteAddress(), r.toText());
          ex.respondJson(
              HttpResponseStatus.OK,
              g -> {
                g.writeStartObject();
                g.writeStringField("object", "replay");
                g.writeNumberField("applied", r.applied());
                g.writeNumberField("already_present", r.alreadyPresent());
                g.writeNumberField("refused", r.refused());
                g.writeNumberField("segments_cleared", r.segmentsCleared());
                g.writeNumberField("segments_left", r.segmentsLeft());
                g.writeNumberField("dead_letters_left", r.deadLettersLeft());
                g.writeEndObject();
              });
        });
  }

  private void authorize(Exchange ex) {
    throttle.check(ex.remoteAddress());
    try {
      checkToken(ex);
    } catch (ApiException e) {
      throttle.recordFailure(ex.remoteAddress());
      throw e;
    }
  }

  /**
   * Whether {@code presented} is the admin token (SHA-256 digests compared in constant time); false
   * when the admin API is disabled.
   */
  boolean tokenMatches(String presented) {
    return tokenDigest != null
        && presented != null
        && MessageDigest.isEqual(tokenDigest, sha256(presented));
  }

  /**
   * Checks an operator's console sign-in: throttled and counted as a failed authentication like a
   * wrong bearer token.
   *
   * @throws ApiException 404 when the admin API is disabled, 429 while throttled, 401 for a wrong
   *     token
   */
  void checkOperatorSignIn(Exchange ex, String presented) {
    if (!enabled()) {
      throw new ApiException(
          HttpResponseStatus.NOT_FOUND,
          ApiException.INVALID_REQUEST,
          "Operator sign-in is off: this server has no admin.token.",
          "admin_token",
          "admin_disabled");
    }
    throttle.check(ex.remoteAddress());
    if (!tokenMatches(presented)) {
      throttle.recordFailure(ex.remoteAddress());
      log.warn("console operator sign-in with a wrong token from {}", ex.remoteAddress());
      throw new ApiException(
          HttpResponseStatus.UNAUTHORIZED,
          ApiException.INVALID_REQUEST,
          "Incorrect admin token.",
          "admin_token",
          "invalid_admin_token");
    }
  }

  private void checkToken(Exchange ex) {
    String header = ex.request().headers().get(HttpHeaderNames.AUTHORIZATION);
    if (header == null && ex.console().cookieSent()) {
      // An operator console session stands for the token (ConsoleSessions; CSRF is checked by
      // Routes before any endpoint runs).
      ConsoleSessions.Session s = ex.console().session();
      if (s != null && s.kind() == ConsoleSessions.Kind.OPERATOR) {
        return;
      }
      throw new ApiException(
          HttpResponseStatus.UNAUTHORIZED,
          ApiException.INVALID_REQUEST,
          s == null
              ? "Your console session has expired or was signed out; sign in again."
              : "A key console session cannot call the admin API; sign in with the admin token.",
          null,
          s == null ? "session_expired" : "not_operator_session");
    }
    String presented =
        header != null && header.regionMatches(true, 0, "Bearer ", 0, 7)
            ? header.substring(7).trim()
            : null;
    if (presented == null || presented.isEmpty()) {
      throw new ApiException(
          HttpResponseStatus.UNAUTHORIZED,
          ApiException.INVALID_REQUEST,
          "The admin API needs Authorization: Bearer <admin token> (setting admin.token).",
          null,
          "missing_admin_token");
    }
    if (!MessageDigest.isEqual(tokenDigest, sha256(presented))) {
      log.warn("admin request with a wrong token from {}", ex.remoteAddress());
      throw new ApiException(
          HttpResponseStatus.UNAUTHORIZED,
          ApiException.INVALID_REQUEST,
          "Incorrect admin token.",
          null,
          "invalid_admin_token");
    }
  }

  private void reconcile(Exchange ex) {
    Instant to = UsageEndpoint.instant(ex.query("to"), "to", clock.instant());
    Instant from = UsageEndpoint.instant(ex.query("from"), "from", to.minus(DEFAULT_WINDOW));
    if (!to.isAfter(from)) {
      throw ApiException.invalid("to", "to (" + to + ") must be after from (" + from + ").");
    }
    if (Duration.between(from, to).compareTo(MAX_WINDOW) > 0) {
      throw ApiException.invalid(
          "from", "the range may span at most " + MAX_WINDOW.toDays() + " days.");
    }
    UUID replica = replica(ex.query("replica"));
    CompletableFuture<ReconciliationReport> report;
    try {
      report =
          CompletableFuture.supplyAsync(
              () -> reconciliation.report(from, to, replica), // writes the recorder's totals first
              blocking);
    } catch (RejectedExecutionException e) {
      throw Authenticator.overloaded();
    }
    ex.then(
        report.exceptionally(
            e -> {
              Throwable cause = Exchange.unwrap(e);
              if (cause instanceof ShippingLagException lag) {
                throw new ApiException(
                    HttpResponseStatus.SERVICE_UNAVAILABLE,
                    ApiException.SERVER,
                    lag.getMessage(),
                    null,
                    CompletionsEndpoint.BILLING_UNAVAILABLE);
              }
              log.warn("reconciliation report failed", cause);
              throw new ApiException(
                  HttpResponseStatus.SERVICE_UNAVAILABLE,
                  ApiException.SERVER,
                  "The reconciliation cannot be computed right now (the billing database is"
                      + " unavailable); retry later.",
                  null,
                  CompletionsEndpoint.BILLING_UNAVAILABLE);
            }),
        r -> ex.respondJson(HttpResponseStatus.OK, g -> write(g, r)));
  }

  /** The {@code replica} parameter: absent for the whole ledger, else an outbox owner's UUID. */
  static UUID replica(String text) {
    if (text == null) {
      return null;
    }
    try {
      UUID id = UUID.fromString(text.trim());
      if (!id.toString().equals(text.trim().toLowerCase(java.util.Locale.ROOT))) {
        throw new IllegalArgumentException(text);
      }
      return id;
    } catch (IllegalArgumentException e) {
      throw ApiException.invalid(
          "replica",
          "replica must be a replica's id, a UUID such as 9f0c8a52-3c1e-4d2b-9a43-1b7c2e5d6f70"
              + " (GET /readyz shows ledger_replica).");
    }
  }

  private void listKeys(Exchange ex) {
    String account = ex.query("account");
    keyOperation(
        ex,
        () -> keys.list(account),
        HttpResponseStatus.OK,
        (g, list) -> {
          g.writeStartObject();
          g.writeStringField("object", "list");
          g.writeArrayFieldStart("data");
          for (ApiKeyInfo k : list) {
            writeKey(g, k);
          }
          g.writeEndArray();
          g.writeEndObject();
        });
  }

  private void createKey(Exchange ex) {
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
          "The body must be a JSON object: {\"account\": \"NAME\"}.",
          null,
          "invalid_json");
    }
    for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
      String name = it.next();
      if (!name.equals("account") && !name.equals("scope")) {
        throw ApiException.invalid(name, "Unrecognized request argument supplied: " + name);
      }
    }
    JsonNode account = root.get("account");
    if (account == null || account.isNull()) {
      throw ApiException.missing("account");
    }
    if (!account.isTextual()) {
      throw ApiException.wrongType("account", "a string", account.getNodeType().toString());
    }
    String name = account.asText();
    KeyScope scope = KeyScope.INFERENCE;
    JsonNode scopeNode = root.get("scope");
    if (scopeNode != null && !scopeNode.isNull()) {
      if (!scopeNode.isTextual()) {
        throw ApiException.wrongType("scope", "a string", scopeNode.getNodeType().toString());
      }
      try {
        scope = KeyScope.parse(scopeNode.asText());
      } catch (IllegalArgumentException e) {
        throw ApiException.invalid("scope", e.getMessage() + ".");
      }
    }
    KeyScope chosen = scope;
    keyOperation(
        ex,
        () -> keys.create(name, chosen),
        HttpResponseStatus.CREATED,
        AdminEndpoint::writeCreated);
  }

  /** {@code /admin/keys/{id}/...}: a positive decimal id, else 400. */
  private static long keyId(String text) {
    if (!text.isEmpty() && text.length() <= 18 && text.chars().allMatch(Character::isDigit)) {
      long id = Long.parseLong(text);
      if (id > 0) {
        return id;
      }
    }
    throw ApiException.invalid(
        "id", "The key id in the path must be a positive integer (see GET /admin/keys).");
  }

  /** A key's fields as an object's body (JSON). */
  @FunctionalInterface
  private interface Body<T> {
    void write(JsonGenerator g, T value) throws IOException;
  }

  /** Runs {@code work} on the blocking executor and answers with its result or its error. */
  private <T> void keyOperation(
      Exchange ex, Supplier<T> work, HttpResponseStatus status, Body<T> body) {
    CompletableFuture<T> result;
    try {
      result = CompletableFuture.supplyAsync(work, blocking);
    } catch (RejectedExecutionException e) {
      throw Authenticator.overloaded();
    }
    ex.then(
        result.exceptionally(
            e -> {
              throw keyError(Exchange.unwrap(e));
            }),
        v -> ex.respondJson(status, g -> body.write(g, v)));
  }

  /**
   * 404 {@code api_key_not_found} or 409 {@code api_key_revoked} for a key that does not exist or
   * is revoked already; {@code listPath} is where the caller can list the keys. Shared by the admin
   * API's versions.
   */
  static ApiException keyStateError(ApiKeyStateException state, String listPath) {
    return state.problem() == ApiKeyStateException.Problem.UNKNOWN
        ? new ApiException(
            HttpResponseStatus.NOT_FOUND,
            ApiException.INVALID_REQUEST,
            "No API key has id " + state.keyId() + " (see GET " + listPath + ").",
            "id",
            "api_key_not_found")
        : new ApiException(
            HttpResponseStatus.CONFLICT,
            ApiException.INVALID_REQUEST,
            "API key " + state.keyId() + " is already revoked.",
            "id",
            "api_key_revoked");
  }

  private static ApiException keyError(Throwable e) {
    if (e instanceof ApiKeyStateException state) {
      return keyStateError(state, "/admin/keys");
    }
    if (e instanceof IllegalArgumentException) {
      return ApiException.invalid("account", e.getMessage());
    }
    if (e instanceof ApiException api) {
      return api;
    }
    log.warn("API key operation failed", e);
    return new ApiException(
        HttpResponseStatus.SERVICE_UNAVAILABLE,
        ApiException.SERVER,
        "API keys cannot be changed or read right now (the billing database is unavailable);"
            + " retry later.",
        null,
        CompletionsEndpoint.BILLING_UNAVAILABLE);
  }

  static void writeKey(JsonGenerator g, ApiKeyInfo k) throws IOException {
    g.writeStartObject();
    writeKeyFields(g, k.keyId(), k.prefix(), k.accountId(), k.accountName(), k.createdAt());
    g.writeStringField("scope", k.scope().dbName());
    if (k.revokedAt() == null) {
      g.writeNullField("revoked_at");
    } else {
      g.writeStringField("revoked_at", k.revokedAt().toString());
    }
    g.writeEndObject();
  }

  static void writeCreated(JsonGenerator g, CreatedApiKey k) throws IOException {
    g.writeStartObject();
    writeKeyFields(g, k.keyId(), k.prefix(), k.accountId(), k.accountName(), k.createdAt());
    g.writeStringField("scope", k.scope().dbName());
    g.writeNullField("revoked_at");
    g.writeStringField("key", k.plaintext());
    g.writeEndObject();
  }

  static void writeRotation(JsonGenerator g, RotatedApiKey r) throws IOException {
    g.writeStartObject();
    g.writeStringField("object", "api_key.rotation");
    g.writeFieldName("created");
    writeCreated(g, r.created());
    g.writeFieldName("revoked");
    writeKey(g, r.revoked());
    g.writeEndObject();
  }

  private static void writeKeyFields(
      JsonGenerator g, long id, String prefix, long accountId, String account, Instant createdAt)
      throws IOException {
    g.writeStringField("object", "api_key");
    g.writeNumberField("id", id);
    g.writeStringField("prefix", prefix);
    g.writeStringField("account", account);
    g.writeNumberField("account_id", accountId);
    g.writeStringField("created_at", createdAt.toString());
  }

  static void write(JsonGenerator g, ReconciliationReport r) throws IOException {
    g.writeStartObject();
    g.writeStringField("object", "reconciliation");
    g.writeStringField("from", r.from().toString());
    g.writeStringField("to", r.to().toString());
    g.writeNumberField("total_drift_ns", r.totalDriftNs());
    g.writeBooleanField("exact", r.exact());
    g.writeBooleanField("balanced", r.balanced());
    g.writeNumberField("straddling_at_from", r.straddlingAtFrom());
    g.writeNumberField("straddling_at_to", r.straddlingAtTo());
    if (r.replica() != null) {
      g.writeStringField("replica", r.replica().toString());
    }
    g.writeArrayFieldStart("replicas");
    for (ReconciliationReport.ReplicaLine l : r.replicas()) {
      g.writeStartObject();
      g.writeStringField("replica", l.replica().toString());
      g.writeNumberField("measured_ns", l.measuredNs());
      g.writeNumberField("charged_ns", l.chargedNs());
      g.writeNumberField("system_ns", l.systemNs());
      g.writeNumberField("unbilled_ns", l.unbilledNs());
      g.writeNumberField("ledger_ns", l.ledgerNs());
      g.writeNumberField("drift_ns", l.driftNs());
      g.writeNumberField("unattributed_ns", l.unattributedNs());
      g.writeNumberField("steps", l.steps());
      g.writeNumberField("records", l.records());
      g.writeNumberField("voided_ns", l.voidedNs());
      g.writeEndObject();
    }
    g.writeEndArray();
    g.writeArrayFieldStart("lines");
    for (ReconciliationReport.Line l : r.lines()) {
      g.writeStartObject();
      g.writeStringField("model", l.model());
      g.writeStringField("device", l.device());
      g.writeNumberField("measured_ns", l.measuredNs());
      g.writeNumberField("charged_ns", l.chargedNs());
      g.writeNumberField("system_ns", l.systemNs());
      g.writeNumberField("unbilled_ns", l.unbilledNs());
      g.writeNumberField("ledger_ns", l.ledgerNs());
      g.writeNumberField("drift_ns", l.driftNs());
      g.writeNumberField("unattributed_ns", l.unattributedNs());
      g.writeNumberField("steps", l.steps());
      g.writeNumberField("records", l.records());
      g.writeNumberField("voided_ns", l.voidedNs());
      g.writeEndObject();
    }
    g.writeEndArray();
    g.writeObjectFieldStart("voided_ns_by_reason");
    for (Map.Entry<String, Long> v : r.voidedNsByReason().entrySet()) {
      g.writeNumberField(v.getKey(), v.getValue());
    }
    g.writeEndObject();
    g.writeStringField("text", r.toText());
    g.writeEndObject();
  }

  private static byte[] sha256(String s) {
    try {
      return MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8));
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }
}
