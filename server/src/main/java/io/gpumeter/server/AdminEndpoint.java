package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import io.gpumeter.billing.ReconciliationReport;
import io.gpumeter.billing.SetAsideReplay;
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
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The admin API, under {@code /admin/}: {@code GET /admin/reconcile?from=ISO&to=ISO} and {@code
 * POST /admin/replay} (re-applies the charges set aside: quarantined outbox segments and dead
 * letters, idempotently; answers what was applied, already present and still refused).
 *
 * <p>Enabled only when {@code admin.token} is configured; otherwise every {@code /admin/} path is a
 * 404 as if it did not exist. Requests carry {@code Authorization: Bearer <admin.token>}; the token
 * is compared by SHA-256 digest in constant time. API keys are not admin tokens.
 *
 * <p>Reconcile flushes this server's reconciliation totals first (so the current minute is in the
 * database), then reports measured device time against the ledger over {@code [from, to)} widened
 * to whole minutes (billing-api/README.md, Reconciliation). The queries run on the blocking
 * executor.
 */
final class AdminEndpoint {
  private static final Logger log = LoggerFactory.getLogger(AdminEndpoint.class);
  static final Duration DEFAULT_WINDOW = Duration.ofHours(1);
  static final Duration MAX_WINDOW = Duration.ofDays(366);

  private final byte[] tokenDigest; // null: disabled
  private final Reconciliation reconciliation;
  private final Supplier<SetAsideReplay> replay;
  private final Executor blocking;
  private final Clock clock;

  AdminEndpoint(
      String token,
      Reconciliation reconciliation,
      Supplier<SetAsideReplay> replay,
      Executor blocking,
      Clock clock) {
    this.tokenDigest = token == null ? null : sha256(token);
    this.reconciliation = reconciliation;
    this.replay = replay;
    this.blocking = blocking;
    this.clock = clock;
  }

  boolean enabled() {
    return tokenDigest != null;
  }

  void handle(Exchange ex) {
    if (!enabled()) {
      throw Routes.unknownUrl(ex);
    }
    switch (ex.path()) {
      case "/admin/reconcile" -> {
        Routes.allow(ex, HttpMethod.GET, "GET");
        authorize(ex);
        reconcile(ex);
      }
      case "/admin/replay" -> {
        Routes.allow(ex, HttpMethod.POST, "POST");
        authorize(ex);
        replay(ex);
      }
      default -> throw Routes.unknownUrl(ex);
    }
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
    String header = ex.request().headers().get(HttpHeaderNames.AUTHORIZATION);
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
    CompletableFuture<ReconciliationReport> report;
    try {
      report =
          CompletableFuture.supplyAsync(
              () -> reconciliation.report(from, to), // writes the recorder's totals first
              blocking);
    } catch (RejectedExecutionException e) {
      throw Authenticator.overloaded();
    }
    ex.then(
        report.exceptionally(
            e -> {
              log.warn("reconciliation report failed", Exchange.unwrap(e));
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
      g.writeEndObject();
    }
    g.writeEndArray();
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
