package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.json.JsonMapper;
import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.Balance;
import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.IdempotencyClaim;
import io.gpumeter.billing.IdempotencyKeys;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.util.AsciiString;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code Idempotency-Key} for the POST endpoints that generate (server/README.md, "Idempotent
 * retries"). An endpoint calls {@link #prepare} before it parses the body, {@link #claim} once the
 * request is valid and before it generates, and answers a success through {@link Ticket#respond}:
 * the answer is stored before it is sent, so a retry gets exactly it, and the charge of the one
 * generation is the only one.
 *
 * <p>What is stored: only a 200 answer. Any error response (validation after the claim, 429, 503
 * not durable, 504 timeout, 500) releases the key through {@link Exchange#onFail}, and so does a
 * client that leaves before the answer is stored: a retry runs again (a failed attempt keeps
 * whatever charge invariants 2 and 15 give it). {@code stream: true} with a key is refused (400): a
 * stream is not stored.
 *
 * <p>Threads: {@link #prepare} and the answers run on the event loop; the database calls run on the
 * blocking pool.
 */
final class IdempotencyGate {
  private static final Logger log = LoggerFactory.getLogger(IdempotencyGate.class);

  static final AsciiString IDEMPOTENCY_KEY = AsciiString.cached("idempotency-key");
  static final AsciiString REPLAYED = AsciiString.cached("idempotent-replayed");

  /** Sorted keys, so that the same request in another key order or spacing hashes the same. */
  private static final JsonMapper CANONICAL =
      JsonMapper.builder().enable(SerializationFeature.ORDER_MAP_ENTRIES_BY_KEYS).build();

  private final IdempotencyKeys keys;
  private final Executor blocking;
  private final Duration lease;
  private final BalanceCache balances;

  /**
   * @param lease how long a claim stays in flight before a retry may take it over: longer than an
   *     attempt can run (the request timeout plus the durability wait)
   * @param balances the remaining-funds headers of a replay (as of the replay, not the original)
   */
  IdempotencyGate(IdempotencyKeys keys, Executor blocking, Duration lease, BalanceCache balances) {
    this.keys = keys;
    this.blocking = blocking;
    this.lease = lease;
    this.balances = balances;
  }

  /**
   * How long a claim stays in flight: the request timeout plus {@link #LEASE_MARGIN} (queueing is
   * inside the request timeout; the margin covers the durability wait and the answer's store).
   */
  static Duration lease(ServerConfig config) {
    return config.requestTimeout().plus(LEASE_MARGIN);
  }

  static final Duration LEASE_MARGIN = Duration.ofMinutes(2);

  /**
   * Reads the {@code Idempotency-Key} header: null when there is none.
   *
   * @throws ApiException 400 when the key is not 1..255 printable ASCII characters, or comes with
   *     {@code stream: true}
   */
  Ticket prepare(Exchange ex, ApiKeyPrincipal principal, String requestId, String endpoint) {
    String key = ex.request().headers().get(IDEMPOTENCY_KEY);
    if (key == null) {
      return null;
    }
    if (!IdempotencyKeys.isValidKey(key)) {
      throw new ApiException(
          HttpResponseStatus.BAD_REQUEST,
          ApiException.INVALID_REQUEST,
          "The Idempotency-Key header must be 1 to "
              + IdempotencyKeys.MAX_KEY_LENGTH
              + " printable ASCII characters (a UUID is a good key); it was "
              + (key.isEmpty() ? "empty" : key.length() + " characters long")
              + ".",
          null,
          "invalid_idempotency_key");
    }
    JsonNode body;
    try {
      body = Json.MAPPER.readTree(ByteBufUtil.getBytes(ex.body()));
    } catch (IOException e) {
      body = null; // the endpoint's parser answers with the precise error
    }
    if (body != null && body.path("stream").asBoolean(false)) {
      throw new ApiException(
          HttpResponseStatus.BAD_REQUEST,
          ApiException.INVALID_REQUEST,
          "Idempotency-Key cannot be used with stream: true (a stream is not stored for replay);"
              + " send the request without the header, or without streaming.",
          "stream",
          "idempotency_key_with_stream");
    }
    return new Ticket(
        principal.keyId(), principal.accountId(), key, hash(endpoint, body), requestId);
  }

  /**
   * Claims the ticket's key. The future yields true when the caller may generate; false when the
   * exchange was already answered (a replay of the stored answer). A refusal (409 in flight, 422
   * another body, 503 database unreachable) fails the future with an {@link ApiException}.
   */
  CompletableFuture<Boolean> claim(Exchange ex, Ticket t) {
    CompletableFuture<IdempotencyClaim> claim;
    try {
      claim =
          CompletableFuture.supplyAsync(
              () -> keys.claim(t.apiKeyId, t.key, t.hash, t.requestId, lease), blocking);
    } catch (RejectedExecutionException e) {
      return CompletableFuture.failedFuture(unavailable("the server is overloaded"));
    }
    return claim
        .exceptionally(
            e -> {
              Throwable cause = Exchange.unwrap(e);
              if (cause instanceof BillingException) {
                log.warn("idempotency key not claimed: {}", cause.toString());
                throw unavailable("the billing database cannot be reached");
              }
              throw e instanceof RuntimeException r ? r : new IllegalStateException(e);
            })
        .thenCompose(
            c ->
                c.outcome() == IdempotencyClaim.Outcome.REPLAY
                    ? balances.get(t.accountId).thenApply(b -> new Claimed(c, b))
                    : CompletableFuture.completedFuture(new Claimed(c, Optional.empty())))
        .thenApplyAsync(c -> decide(ex, t, c.claim, c.balance), ex.loop());
  }

  /** A claim, with the account's balance when it is a replay (for the remaining-funds headers). */
  private record Claimed(IdempotencyClaim claim, Optional<Balance> balance) {}

  /**
   * A replay carries the receipt headers of the answer it replays, read from that answer's {@code
   * usage} (the stored body is the answer as sent: its device time and cost are the charge's).
   */
  static void receiptHeaders(Exchange ex, byte[] body) {
    JsonNode usage;
    try {
      usage = CANONICAL.readTree(body).path("usage");
    } catch (IOException e) {
      log.warn("stored answer of {} is not JSON; replayed without receipt headers", ex.requestId());
      return;
    }
    JsonNode ns = usage.path("device_time_ns");
    if (ns.isIntegralNumber()) {
      ex.header(CompletionsEndpoint.X_DEVICE_TIME_NS, ns.asText());
    }
    JsonNode cost = usage.path("cost");
    if (cost.isIntegralNumber()) {
      ex.header(Receipt.X_COST_MICROS, cost.asText());
    }
  }

  private boolean decide(Exchange ex, Ticket t, IdempotencyClaim c, Optional<Balance> balance) {
    switch (c.outcome()) {
      case CLAIMED -> {
        if (c.supersededRequestId() != null) {
          log.warn(
              "Idempotency-Key retry {} took over from {}, whose answer was never stored; its"
                  + " charge is voided (idempotent_retry)",
              t.requestId,
              c.supersededRequestId());
        }
        ex.onFail(t::release);
        return true;
      }
      case REPLAY -> {
        ex.requestId(c.requestId());
        receiptHeaders(ex, c.body());
        // the funds left now (cached, as on any answer), not those the original answer showed
        balance.ifPresent(b -> Receipt.addRateLimitHeaders(ex, b));
        ex.respond(
            HttpResponseStatus.valueOf(c.status()),
            Unpooled.wrappedBuffer(c.body()),
            Exchange.APPLICATION_JSON,
            REPLAYED,
            "true");
        return false;
      }
      case IN_FLIGHT ->
          throw new ApiException(
                  HttpResponseStatus.CONFLICT,
                  ApiException.INVALID_REQUEST,
                  "A request with this Idempotency-Key is still being processed (request id "
                      + c.requestId()
                      + "). Retry after it finishes to get its answer.",
                  null,
                  "idempotency_key_in_use")
              .withHeader(HttpHeaderNames.RETRY_AFTER, "1");
      case MISMATCH ->
          throw new ApiException(
              HttpResponseStatus.UNPROCESSABLE_ENTITY,
              ApiException.INVALID_REQUEST,
              "This Idempotency-Key was already used with a different request body (request id "
                  + c.requestId()
                  + "). Use a new key for a new request; keys are kept 24 hours.",
              null,
              "idempotency_key_reused");
    }
    throw new IllegalStateException("unknown outcome " + c.outcome());
  }

  private static ApiException unavailable(String why) {
    return new ApiException(
            HttpResponseStatus.SERVICE_UNAVAILABLE,
            ApiException.SERVER,
            "Requests with an Idempotency-Key are not accepted right now: "
                + why
                + ". Nothing was generated or charged; retry later.",
            null,
            CompletionsEndpoint.BILLING_UNAVAILABLE)
        .withHeader(HttpHeaderNames.RETRY_AFTER, CompletionsEndpoint.RETRY_AFTER_SECONDS);
  }

  /** SHA-256 of the endpoint and the body with sorted keys (of the raw bytes if not JSON). */
  static byte[] hash(String endpoint, JsonNode body) {
    MessageDigest sha;
    try {
      sha = MessageDigest.getInstance("SHA-256");
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("SHA-256 is missing from this JVM", e);
    }
    sha.update(endpoint.getBytes(StandardCharsets.UTF_8));
    sha.update((byte) '\n');
    if (body != null) {
      try {
        sha.update(CANONICAL.writeValueAsBytes(CANONICAL.treeToValue(body, Object.class)));
      } catch (IOException e) {
        throw new IllegalStateException("a parsed JSON tree could not be written again", e);
      }
    }
    return sha.digest();
  }

  /**
   * One request's hold on its key. Owned by the exchange's event loop, except the store outcome,
   * which the blocking pool sets.
   */
  final class Ticket {
    private final long apiKeyId;
    private final long accountId;
    private final String key;
    private final byte[] hash;
    private final String requestId;

    /** Set when the answer's store starts; yields whether it was stored. */
    private CompletableFuture<Boolean> store;

    private Ticket(long apiKeyId, long accountId, String key, byte[] hash, String requestId) {
      this.apiKeyId = apiKeyId;
      this.accountId = accountId;
      this.key = key;
      this.hash = hash;
      this.requestId = requestId;
    }

    /**
     * Stores the answer, then sends it. If it cannot be stored (database unreachable) it is sent
     * anyway: the client is waiting and its charge is durable; the key stays in flight until its
     * lease runs out (server/README.md says what a retry then does).
     */
    void respond(Exchange ex, HttpResponseStatus status, Json.Writer writer) {
      respond(ex, status, writer, null, null);
    }

    /** As {@link #respond(Exchange, HttpResponseStatus, Json.Writer)}, with one extra header. */
    void respond(
        Exchange ex,
        HttpResponseStatus status,
        Json.Writer writer,
        io.netty.util.AsciiString extraHeader,
        String extraValue) {
      ByteBuf content = Json.write(ex.alloc(), writer);
      byte[] bytes = ByteBufUtil.getBytes(content);
      try {
        store =
            CompletableFuture.supplyAsync(
                () -> keys.complete(apiKeyId, key, requestId, status.code(), bytes), blocking);
      } catch (RejectedExecutionException e) {
        store = CompletableFuture.failedFuture(e);
      }
      store
          .handle(
              (stored, err) -> {
                if (err != null) {
                  log.error(
                      "answer of {} not stored for its Idempotency-Key (sent anyway)",
                      requestId,
                      err);
                } else if (!stored) {
                  log.warn(
                      "answer of {} not stored: a retry took its Idempotency-Key over", requestId);
                }
                return null;
              })
          .whenCompleteAsync(
              (ignored, err) ->
                  ex.respond(status, content, Exchange.APPLICATION_JSON, extraHeader, extraValue),
              ex.loop());
    }

    /**
     * Whether the answer is (or is being) stored, for a client that left or a write that failed: a
     * stored answer counts as delivered (a retry gets it), so its charge stands; otherwise the key
     * is released and the future yields false.
     */
    CompletableFuture<Boolean> stored() {
      CompletableFuture<Boolean> s = store;
      if (s == null) {
        release();
        return CompletableFuture.completedFuture(false);
      }
      return s.handle(
          (stored, err) -> {
            boolean ok = err == null && stored;
            if (!ok) {
              release();
            }
            return ok;
          });
    }

    /** Drops the claim (asynchronously): a retry runs again. */
    void release() {
      try {
        blocking.execute(
            () -> {
              try {
                keys.release(apiKeyId, key, requestId);
              } catch (RuntimeException e) {
                // The claim stays in flight until its lease runs out; a retry gets 409 till then.
                log.warn("Idempotency-Key of {} not released: {}", requestId, e.toString());
              }
            });
      } catch (RejectedExecutionException e) {
        log.warn("Idempotency-Key of {} not released: the blocking pool is full", requestId);
      }
    }
  }
}
