package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.HourlyUsage;
import io.gpumeter.billing.KvUsage;
import io.gpumeter.billing.UsageReport;
import io.gpumeter.billing.UsageTotals;
import io.gpumeter.billing.usage.UsageQueries;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.io.IOException;
import java.math.BigInteger;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.format.DateTimeParseException;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;

/**
 * {@code GET /v1/usage?start=ISO8601&end=ISO8601}: the calling key's own usage, from the hourly
 * rollup, as totals and per-hour, per-model buckets. Defaults to the last 24 hours. The query runs
 * on the blocking executor.
 */
final class UsageEndpoint {
  static final Duration DEFAULT_WINDOW = Duration.ofHours(24);
  static final Duration MAX_WINDOW = Duration.ofDays(366);

  /** Earliest {@code start} or {@code end} accepted. */
  static final Instant MIN_TIME = Instant.EPOCH;

  /** Latest {@code start} or {@code end} accepted (the last second of year 9999). */
  static final Instant MAX_TIME = Instant.parse("9999-12-31T23:59:59Z");

  private final Authenticator auth;
  private final UsageQueries usage;
  private final Executor blocking;
  private final Clock clock;

  UsageEndpoint(Authenticator auth, UsageQueries usage, Executor blocking, Clock clock) {
    this.auth = auth;
    this.usage = usage;
    this.blocking = blocking;
    this.clock = clock;
  }

  void handle(Exchange ex) {
    ex.then(auth.authenticate(ex), principal -> query(ex, principal));
  }

  private void query(Exchange ex, ApiKeyPrincipal principal) {
    Instant end = instant(ex.query("end"), "end", clock.instant());
    Instant start = instant(ex.query("start"), "start", end.minus(DEFAULT_WINDOW));
    if (end.isBefore(start)) {
      throw ApiException.invalid("end", "end (" + end + ") is before start (" + start + ").");
    }
    if (Duration.between(start, end).compareTo(MAX_WINDOW) > 0) {
      throw ApiException.invalid(
          "start",
          "the window from start to end may span at most " + MAX_WINDOW.toDays() + " days.");
    }
    CompletableFuture<Read> report;
    try {
      report =
          CompletableFuture.supplyAsync(
              () ->
                  new Read(
                      usage.usage(principal.keyId(), start, end),
                      usage.kvUsage(principal.keyId(), start, end)),
              blocking);
    } catch (RejectedExecutionException e) {
      throw Authenticator.overloaded();
    }
    ex.then(
        report.exceptionally(
            e -> {
              throw OrganizationReads.unavailable("Usage", e);
            }),
        r -> ex.respondJson(HttpResponseStatus.OK, g -> write(g, principal, r.report(), r.kv())));
  }

  /**
   * An ISO-8601 time with an offset, between {@link #MIN_TIME} and {@link #MAX_TIME}.
   *
   * @throws ApiException 400 naming {@code param}: unparsable, or out of that range
   */
  static Instant instant(String text, String param, Instant dflt) {
    if (text == null || text.isBlank()) {
      return dflt;
    }
    Instant t;
    try {
      t = OffsetDateTime.parse(text.trim()).toInstant();
    } catch (DateTimeParseException e) {
      try {
        t = Instant.parse(text.trim());
      } catch (DateTimeParseException e2) {
        throw ApiException.invalid(
            param,
            "'"
                + param
                + "' must be an ISO-8601 time with an offset, such as"
                + " 2025-01-31T12:00:00Z; got '"
                + shorten(text)
                + "'.");
      }
    }
    if (t.isBefore(MIN_TIME) || t.isAfter(MAX_TIME)) {
      throw ApiException.invalid(
          param,
          "'"
              + param
              + "' must be between "
              + MIN_TIME
              + " and "
              + MAX_TIME
              + "; got '"
              + shorten(text)
              + "'.");
    }
    return t;
  }

  private static String shorten(String text) {
    return text.length() > 100 ? text.substring(0, 100) + "..." : text;
  }

  /** The rollup report and the KV memory-time read beside it. */
  private record Read(UsageReport report, List<KvUsage> kv) {}

  private static void write(
      JsonGenerator g, ApiKeyPrincipal who, UsageReport r, List<KvUsage> kvHours)
      throws IOException {
    Map<String, KvUsage> kvByBucket = new HashMap<>();
    BigInteger kvTotal = BigInteger.ZERO;
    long peakTotal = 0;
    for (KvUsage k : kvHours) {
      kvByBucket.put(k.hour() + "|" + k.model(), k);
      kvTotal = kvTotal.add(k.kvByteNs());
      peakTotal = Math.max(peakTotal, k.peakKvBytes());
    }
    g.writeStartObject();
    g.writeStringField("object", "usage");
    g.writeNumberField("api_key_id", r.apiKeyId());
    g.writeStringField("key_prefix", who.keyPrefix());
    g.writeStringField("account", who.accountName());
    g.writeStringField("start", r.from().toString());
    g.writeStringField("end", r.to().toString());
    g.writeObjectFieldStart("totals");
    writeTotals(g, r.totals());
    writeKv(g, kvTotal, peakTotal);
    g.writeEndObject();
    g.writeArrayFieldStart("data");
    for (HourlyUsage h : r.hours()) {
      g.writeStartObject();
      g.writeStringField("hour", h.hour().toString());
      g.writeStringField("model", h.model());
      writeTotals(g, h.totals());
      KvUsage k = kvByBucket.get(h.hour() + "|" + h.model());
      writeKv(g, k == null ? BigInteger.ZERO : k.kvByteNs(), k == null ? 0 : k.peakKvBytes());
      g.writeEndObject();
    }
    g.writeEndArray();
    g.writeEndObject();
  }

  /**
   * KV memory-time (issue 18): byte-nanoseconds as an exact JSON integer and as a decimal string (a
   * sum can pass 2^53, where JavaScript numbers stop being exact), and the largest peak.
   */
  private static void writeKv(JsonGenerator g, BigInteger kvByteNs, long peak) throws IOException {
    g.writeFieldName("kv_byte_ns");
    g.writeNumber(kvByteNs);
    g.writeStringField("kv_byte_ns_decimal", kvByteNs.toString());
    g.writeNumberField("peak_kv_bytes", peak);
  }

  private static void writeTotals(JsonGenerator g, UsageTotals t) throws IOException {
    g.writeNumberField("requests", t.requests());
    g.writeNumberField("device_time_ns", t.deviceNs());
    Json.writeMillis(g, "device_time_ms", t.deviceNs());
    g.writeNumberField("prefill_time_ns", t.prefillNs());
    g.writeNumberField("decode_time_ns", t.decodeNs());
    g.writeNumberField("prompt_tokens", t.promptTokens());
    g.writeNumberField("completion_tokens", t.completionTokens());
    g.writeNumberField("tokens", t.promptTokens() + t.completionTokens());
  }
}
