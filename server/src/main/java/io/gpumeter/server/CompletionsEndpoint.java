package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import io.gpumeter.batching.AdmissionRejectedException;
import io.gpumeter.batching.Choice;
import io.gpumeter.batching.FinishReason;
import io.gpumeter.batching.Generation;
import io.gpumeter.batching.GenerationRequest;
import io.gpumeter.batching.GenerationResult;
import io.gpumeter.batching.ReplicaFailedException;
import io.gpumeter.batching.SamplingOptions;
import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.Balance;
import io.gpumeter.billing.Billing;
import io.gpumeter.billing.Budgets;
import io.gpumeter.billing.ChargeCost;
import io.gpumeter.billing.LedgerFullException;
import io.gpumeter.billing.LedgerHealth;
import io.gpumeter.billing.LedgerUnavailableException;
import io.gpumeter.billing.VoidReason;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.model.IncrementalDecoder;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.util.AsciiString;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ThreadLocalRandom;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code POST /v1/completions}: authenticate, validate, tokenize, submit to the model's scheduler,
 * and answer once the generation is done and its charge is durable.
 *
 * <p>Every step after authentication runs on the connection's event loop; the scheduler completes
 * the result on its own thread and {@link Exchange#then} hops back. If the client disconnects
 * first, the generation is cancelled; it is still charged for the steps it took part in.
 *
 * <p>A client never pays for an answer it did not get (DESIGN.md invariant 15): when a finished
 * generation's answer is withheld (its charge could not be made durable: 503) or not delivered (the
 * client reset the connection after the generation finished, or the write failed), its charge is
 * voided through {@link Billing#voidCharge} with the reason.
 *
 * <p>Admission: a completion is submitted only while {@link Billing#canAcceptWork()} (the ledger
 * can make a new charge durable: PostgreSQL, or room in the outbox); otherwise 503 {@code
 * billing_unavailable} with the ledger's reason, and nothing is generated.
 *
 * <p>Durability: the response is sent once the usage record's future completes. In the default
 * DURABLE mode that is when the record is committed to PostgreSQL or fsynced to the outbox
 * (DESIGN.md invariant 4); in FAST mode, when it is queued for the writer (a crash loses what is
 * still queued). If the record is refused or cannot be made durable the generated text is withheld
 * and the client gets 503: the work was done but could not be billed.
 */
final class CompletionsEndpoint {
  private static final Logger log = LoggerFactory.getLogger(CompletionsEndpoint.class);

  private final Map<String, ModelEndpoint> models;
  private final Authenticator auth;
  private final Billing billing;
  private final ServerMetrics metrics;
  private final int maxTokensDefault;
  private final int maxTokensCap;
  private final long streamBufferBytes;
  private final IdempotencyGate idempotency;
  private final BalanceCache balances;
  private final SpendMetrics spend;

  CompletionsEndpoint(
      Map<String, ModelEndpoint> models,
      Authenticator auth,
      Billing billing,
      ServerMetrics metrics,
      int maxTokensDefault,
      int maxTokensCap,
      long streamBufferBytes,
      IdempotencyGate idempotency,
      BalanceCache balances,
      SpendMetrics spend) {
    this.balances = balances;
    this.spend = spend;
    this.models = models;
    this.idempotency = idempotency;
    this.auth = auth;
    this.billing = billing;
    this.metrics = metrics;
    this.maxTokensDefault = maxTokensDefault;
    this.maxTokensCap = maxTokensCap;
    this.streamBufferBytes = streamBufferBytes;
  }

  void handle(Exchange ex) {
    String requestId = "cmpl-" + newId();
    ex.requestId(requestId);
    ex.then(auth.authenticate(ex), principal -> submit(ex, requestId, principal));
  }

  private void submit(Exchange ex, String requestId, ApiKeyPrincipal principal) {
    // Before the body is parsed, so that an Idempotency-Key with stream: true is refused first.
    IdempotencyGate.Ticket ticket = prepareIdempotency(ex, principal, requestId, "/v1/completions");
    CompletionParams p = CompletionParams.parse(ex.body(), maxTokensDefault, maxTokensCap);
    ModelEndpoint m = model(p.model());
    int vocab = m.model().config().vocabSize();
    SamplingOptions sampling = SamplingParams.parse(p.body(), vocab);
    int maxRunning = m.scheduler().config().maxRunning();
    CompletionOptions options = CompletionOptions.parse(p.body(), maxRunning);
    int logprobs = LogprobParams.completion(p.body());
    int[][] tokens =
        PromptList.parse(
            p.body().get("prompt"), m.model().tokenizer(), vocab, m.model().config().eosId());
    PromptList.checkSequences(tokens.length, options.n());
    String session = session(ex, p.user(), requestId);
    withTicket(
        ex,
        ticket,
        t ->
            generate(
                new CompletionContext(
                    ex,
                    requestId,
                    principal,
                    m,
                    tokens,
                    CompletionContext.Decoding.of(p),
                    COMPLETION,
                    new Extras(session, sampling, options.n(), options.echo(), t, logprobs))));
  }

  /**
   * What a request asks beyond the shared basics.
   *
   * @param session its session (validated: {@link SessionIds})
   * @param sampling its sampling options
   * @param n its number of choices
   * @param echo whether the prompt's text is put before each choice's
   * @param ticket its Idempotency-Key's claim, or null without one
   * @param logprobs alternatives per token for logprobs, 0 to 20, or -1 for no logprobs
   */
  record Extras(
      String session,
      SamplingOptions sampling,
      int n,
      boolean echo,
      IdempotencyGate.Ticket ticket,
      int logprobs) {
    /** Without logprobs. */
    Extras(
        String session,
        SamplingOptions sampling,
        int n,
        boolean echo,
        IdempotencyGate.Ticket ticket) {
      this(session, sampling, n, echo, ticket, LogprobParams.NONE);
    }
  }

  /** The request's session: {@code X-Session-Id}, else {@code user}, else the request id. */
  static String session(Exchange ex, String user, String requestId) {
    return SessionIds.resolve(ex.request().headers().get(SessionIds.X_SESSION_ID), user, requestId);
  }

  /** The request's Idempotency-Key, validated (null without one); see {@link IdempotencyGate}. */
  IdempotencyGate.Ticket prepareIdempotency(
      Exchange ex, ApiKeyPrincipal principal, String requestId, String path) {
    return idempotency.prepare(ex, principal, requestId, path);
  }

  /**
   * Runs {@code then} at once without a key; with one, once the key is claimed (a stored answer is
   * replayed, a key in use is refused, and {@code then} does not run).
   */
  void withTicket(
      Exchange ex, IdempotencyGate.Ticket ticket, Consumer<IdempotencyGate.Ticket> then) {
    if (ticket == null) {
      then.accept(null);
      return;
    }
    ex.then(
        idempotency.claim(ex, ticket),
        claimed -> {
          if (claimed) {
            then.accept(ticket);
          }
        });
  }

  /**
   * The model named {@code name}.
   *
   * @throws ApiException 404 {@code model_not_found}
   */
  ModelEndpoint model(String name) {
    ModelEndpoint m = models.get(name);
    if (m == null) {
      throw new ApiException(
          HttpResponseStatus.NOT_FOUND,
          ApiException.INVALID_REQUEST,
          "The model '"
              + name
              + "' does not exist. Available models: "
              + models.keySet()
              + " (GET /v1/models).",
          "model",
          "model_not_found");
    }
    return m;
  }

  /** How one endpoint writes its answer: whole, or as a stream of chunks. */
  interface Answer {
    /**
     * The whole answer; {@code texts} holds each choice's text, by index, and {@code spans} each
     * choice's logprobs ({@code logprobs} writes them), both null without logprobs; {@code receipt}
     * is the cost written in its {@code usage}.
     */
    Json.Writer whole(
        String model,
        List<String> texts,
        GenerationResult result,
        LogprobsJson logprobs,
        List<LogprobsJson.Span> spans,
        Receipt receipt);

    /** The chunks; {@code logprobs} is null without logprobs. */
    SseStream.Format stream(String model, String requestId, long created, LogprobsJson logprobs);
  }

  static final Answer COMPLETION =
      new Answer() {
        @Override
        public Json.Writer whole(
            String model,
            List<String> texts,
            GenerationResult result,
            LogprobsJson logprobs,
            List<LogprobsJson.Span> spans,
            Receipt receipt) {
          return g -> writeCompletion(g, model, texts, result, logprobs, spans, receipt);
        }

        @Override
        public SseStream.Format stream(
            String model, String requestId, long created, LogprobsJson logprobs) {
          return new CompletionChunks(model, requestId, created, logprobs);
        }
      };

  /**
   * Admission, submission, cancellation on disconnect, the durability wait and the answer; shared
   * by {@code /v1/completions} and {@code /v1/chat/completions}. Runs on the event loop. Each of
   * the context's prompts has {@code extras.n()} choices, all in one request charged once.
   */
  void generate(CompletionContext c) {
    Exchange ex = c.ex();
    PathProbe.Trace trace = PathProbe.begin(ex.startNanos()); // null unless probing (debug)
    if (!billing.canAcceptWork()) {
      // Nothing unmetered is served: if the charge could not be made durable, do not start.
      LedgerHealth health = billing.health(); // the reason (and a second look)
      if (!health.ready()) {
        throw billingRefuses(health.reason());
      }
    }
    // The budget: reserve the estimate before any device time (at once while this replica's lease
    // covers it; else after a renewal on the budget thread). Refused: 429 insufficient_quota.
    CompletableFuture<Budgets.Reservation> reserved =
        BudgetAdmission.reserve(
            billing.budgets(),
            metrics.budget(),
            c.model(),
            c.principal().accountId(),
            c.prompts(),
            c.decoding().maxTokens(),
            c.extras().n());
    // Inline when the lease covered the estimate (the future is complete here, on the loop).
    OnLoop.whenComplete(
        reserved,
        ex.loop(),
        (reservation, refused) -> {
          if (ex.isDone()) {
            if (reservation != null) {
              reservation.settle(0); // the client left while the budget was being renewed
            }
            return;
          }
          if (refused != null) {
            ex.fail(BudgetAdmission.refusal(refused));
            return;
          }
          try {
            start(c, reservation, trace);
          } catch (Exception | Error e) {
            ex.fail(e);
          }
        });
  }

  /** Submission and the answer, once the budget reserved the estimate ({@code reservation}). */
  private void start(CompletionContext c, Budgets.Reservation reservation, PathProbe.Trace trace) {
    Submitted submitted;
    PathProbe.submitted(trace); // before: the scheduler may start the step before submit returns
    try {
      submitted = submit(c, reservation);
    } catch (RuntimeException | Error e) {
      reservation.settle(0); // nothing ran
      throw e;
    }
    // Settled with the charge once it is recorded; nothing is charged when it could not be.
    submitted
        .generation()
        .result()
        .whenComplete(
            (r, err) -> {
              if (r == null) {
                reservation.settle(0);
              } else {
                r.durable()
                    .whenComplete(
                        (ok, notDurable) ->
                            reservation.settle(notDurable == null ? r.usage().deviceNs() : 0));
              }
            });
    follow(c, submitted, trace);
  }

  /** A submitted generation with what follows it: its metrics observer and its stream, if any. */
  private record Submitted(
      Generation generation, ModelMetrics.GenerationObserver observer, SseStream sse) {}

  /** Builds the request and submits it with the reservation as its step guard. */
  private Submitted submit(CompletionContext c, Budgets.Reservation reservation) {
    Exchange ex = c.ex();
    ModelEndpoint m = c.model();
    int[][] prompt = c.prompts();
    Extras extras = c.extras();
    StopStrings stop = c.decoding().stop();
    Long seedOrNull = c.decoding().seed();
    long seed = seedOrNull != null ? seedOrNull : ThreadLocalRandom.current().nextLong();
    ModelMetrics.GenerationObserver observer =
        metrics.model(m.name()).newGeneration(ex.startNanos());
    LogprobsJson logprobs = extras.logprobs() >= 0 ? new LogprobsJson(m.model().tokenizer()) : null;
    SseStream sse =
        c.decoding().stream().stream()
            ? new SseStream(
                ex,
                c.answer().stream(
                    m.name(), c.requestId(), System.currentTimeMillis() / 1000, logprobs),
                () -> new IncrementalDecoder(m.model().tokenizer()),
                stop::holdback,
                streamBufferBytes,
                logprobs != null,
                prompt.length * extras.n(),
                extras.echo()
                    ? SseStream.Echo.of(prompt, extras.n(), m.model().tokenizer(), logprobs)
                    : null)
            : null;
    GenerationRequest request =
        new GenerationRequest(
            c.requestId(),
            c.principal().keyId(),
            c.principal().accountId(),
            prompt[0],
            c.decoding().maxTokens(),
            c.decoding().temperature(),
            seed,
            0L,
            sse != null ? sse.listener(observer) : observer,
            extras.session(),
            extras.sampling(),
            extras.n(),
            stop.condition(m.model().tokenizer()),
            extras.logprobs(),
            List.of(prompt).subList(1, prompt.length),
            extras.echo() && extras.logprobs() >= 0);
    try {
      return new Submitted(m.scheduler().submit(request, reservation::mayStep), observer, sse);
    } catch (AdmissionRejectedException e) {
      throw rejected(e);
    }
  }

  /** Cancellation on disconnect, the durability wait and the answer (streamed or whole). */
  private void follow(CompletionContext c, Submitted submitted, PathProbe.Trace trace) {
    Exchange ex = c.ex();
    String requestId = c.requestId();
    ApiKeyPrincipal principal = c.principal();
    Extras extras = c.extras();
    Generation generation = submitted.generation();
    ModelMetrics.GenerationObserver observer = submitted.observer();
    SseStream sse = submitted.sse();
    // Read (or loaded) while the request generates: the receipt's currency and remaining funds.
    CompletableFuture<Optional<Balance>> balance = balances.get(principal.accountId());
    // Observed before the response is written, and also when the client has left.
    CompletableFuture<GenerationResult> observed = generation.result().whenComplete(observer);
    countSpend(principal, observed, balance);
    ex.onAbandon(
        () -> {
          generation.cancel();
          // Left after the whole answer existed: it was never delivered, so it is not paid for
          // (invariant 15). Left while it was being generated: charged for the steps it ran
          // (invariant 2), since the client asked for that work and a partial answer existed.
          // A stream whose whole text was handed to the kernel was delivered, even if the
          // client left before the usage event or [DONE]. An answer already stored for its
          // Idempotency-Key counts as delivered: a retry gets it.
          IdempotencyGate.Ticket ticket = extras.ticket();
          CompletableFuture<Boolean> stored =
              ticket == null ? CompletableFuture.completedFuture(false) : ticket.stored();
          observed.thenAcceptAsync(
              r -> {
                if (SseStream.finished(r) && (sse == null || !sse.delivered())) {
                  stored.thenAccept(
                      s -> {
                        if (!s) {
                          voidCharge(requestId, VoidReason.CLIENT_GONE);
                        }
                      });
                }
              },
              ex.loop());
        });
    if (sse != null) {
      // The head waits for the remaining funds (loaded off the loop; the text waits in the
      // stream); the cost follows as trailers (StreamReceipts).
      ex.then(
          balance,
          funds -> {
            StreamReceipts.head(ex, funds);
            sse.start(generation);
            ex.then(
                observed,
                result -> {
                  if (!SseStream.finished(result)) {
                    throw unfinished(result);
                  }
                  sse.finish(result);
                  ex.then(
                      result.durable().handle((ok, err) -> Optional.ofNullable(err)),
                      durableError -> {
                        if (durableError.isPresent()) {
                          throw streamNotDurable(result, durableError.get());
                        }
                        sse.close(
                            result, c.decoding().stream().includeUsage(), receipt(result, funds));
                      });
                });
          });
      return;
    }
    // The result and its durability wait are joined off the loop (on the scheduler's and then the
    // ledger writer's thread), so the loop is woken once, when the charge is durable, not once for
    // the result and again for the commit.
    CompletableFuture<Answered> answered =
        observed.thenCompose(
            result -> {
              PathProbe.completed(trace);
              return result.durable().handle((ok, err) -> new Answered(result, err));
            });
    ex.then(
        answered,
        a -> {
          PathProbe.onLoop(trace);
          ex.then(
              balance,
              b -> {
                finish(c, a.result(), a.notDurable(), receipt(a.result(), b));
                PathProbe.written(trace, a.result());
              });
        });
  }

  /** A finished generation and why its charge is not durable (null when it is). */
  private record Answered(GenerationResult result, Throwable notDurable) {}

  private Receipt receipt(GenerationResult result, Optional<Balance> balance) {
    return Receipt.of(billing, result.usage(), balance);
  }

  /** Counts every charge of this generation in the spend metrics once it is durable. */
  private void countSpend(
      ApiKeyPrincipal principal,
      CompletableFuture<GenerationResult> observed,
      CompletableFuture<Optional<Balance>> balance) {
    observed.thenAccept(
        r ->
            r.durable()
                .thenCombine(balance, (v, b) -> b)
                .thenAccept(
                    b -> {
                      UsageRecord u = r.usage();
                      ChargeCost c =
                          b.flatMap(x -> billing.receiptCost(u, x.currency())).orElse(null);
                      spend.record(
                          principal.accountId(),
                          principal.accountName(),
                          u.deviceNs(),
                          c == null ? null : c.roundedMicros(),
                          c == null ? null : c.currency());
                    }));
  }

  /**
   * A streamed answer's text is out before its charge is durable (that is what streaming is); when
   * the charge then cannot be made durable the stream ends with this error instead of the usage
   * event and {@code [DONE]}. The charge is not voided: the client got the text.
   */
  private ApiException streamNotDurable(GenerationResult result, Throwable error) {
    Throwable cause = Exchange.unwrap(error);
    log.error(
        "charge for streamed {} ({} ns) could not be made durable",
        result.usage().requestId(),
        result.usage().deviceNs(),
        cause);
    return new ApiException(
            HttpResponseStatus.SERVICE_UNAVAILABLE,
            ApiException.SERVER,
            "The completion was streamed but its charge could not be recorded durably ("
                + cause.getMessage()
                + ").",
            null,
            BILLING_UNAVAILABLE)
        .withHeader(HttpHeaderNames.RETRY_AFTER, RETRY_AFTER_SECONDS);
  }

  private void finish(
      CompletionContext ctx, GenerationResult result, Throwable notDurable, Receipt receipt) {
    Exchange ex = ctx.ex();
    ModelEndpoint m = ctx.model();
    int[][] prompt = ctx.prompts();
    StopStrings stop = ctx.decoding().stop();
    Extras extras = ctx.extras();
    UsageRecord usage = result.usage();
    FinishReason reason = result.finishReason();
    if (notDurable != null) {
      Throwable cause = Exchange.unwrap(notDurable);
      // Refused at once (queue full, or database down and outbox full): the ledger says why.
      boolean refused =
          cause instanceof LedgerUnavailableException || cause instanceof LedgerFullException;
      if (refused) {
        log.error(
            "charge for {} ({} ns) refused by the ledger: {}; withholding the response",
            usage.requestId(),
            usage.deviceNs(),
            cause.getMessage());
      } else {
        log.error(
            "charge for {} ({} ns) could not be made durable; withholding the response",
            usage.requestId(),
            usage.deviceNs(),
            cause);
      }
      if (reason == FinishReason.STOP
          || reason == FinishReason.LENGTH
          || reason == FinishReason.INSUFFICIENT_QUOTA) {
        // The charge may still be stored later (e.g. a commit that only timed out, or the
        // outbox): the client gets a 503 instead of the answer, so the charge is voided.
        voidCharge(usage.requestId(), VoidReason.NOT_DURABLE);
        LedgerHealth health = refused ? null : billing.health();
        String why = refused ? cause.getMessage() : health.ready() ? null : health.reason();
        throw new ApiException(
                HttpResponseStatus.SERVICE_UNAVAILABLE,
                ApiException.SERVER,
                "The completion was generated but its charge could not be recorded durably"
                    + (why != null ? " (" + why + ")" : "")
                    + ", so it is not returned. Retry later.",
                null,
                BILLING_UNAVAILABLE)
            .withHeader(HttpHeaderNames.RETRY_AFTER, RETRY_AFTER_SECONDS);
      }
    }
    if (!SseStream.finished(result)) {
      throw unfinished(result);
    }
    List<String> texts = new ArrayList<>(result.choices().size());
    LogprobsJson logprobs = extras.logprobs() >= 0 ? new LogprobsJson(m.model().tokenizer()) : null;
    List<LogprobsJson.Span> spans = logprobs != null ? new ArrayList<>() : null;
    for (Choice c : result.choices()) {
      int[] promptTokens = prompt[c.index() / extras.n()];
      String echoed = extras.echo() ? m.model().tokenizer().decode(promptTokens) : "";
      String text = stop.cut(m.model().tokenizer().decode(c.tokens()));
      texts.add(echoed + text);
      if (logprobs != null) {
        // only the tokens that begin before a stop string that was cut off
        int[] offsets = logprobs.offsets(c.tokens());
        LogprobsJson.Span span =
            LogprobsJson.Span.of(c.logprobs(), offsets, LogprobsJson.kept(offsets, text));
        spans.add(extras.echo() ? logprobs.echoed(promptTokens, c, echoed, span) : span);
      }
    }
    Json.Writer whole = ctx.answer().whole(m.name(), texts, result, logprobs, spans, receipt);
    // The receipt: the device time charged and its cost, equal to the stored charge (invariant 8).
    String deviceNs = Long.toString(usage.deviceNs());
    receipt.addHeaders(ex);
    IdempotencyGate.Ticket ticket = extras.ticket();
    if (ticket == null) {
      ex.onUndelivered(() -> voidCharge(usage.requestId(), VoidReason.WRITE_FAILED));
      ex.respond(
          HttpResponseStatus.OK,
          Json.write(ex.alloc(), whole),
          Exchange.APPLICATION_JSON,
          X_DEVICE_TIME_NS,
          deviceNs);
    } else {
      // Stored before it is sent; once stored it counts as delivered (a retry replays it).
      ex.onUndelivered(
          () ->
              ticket
                  .stored()
                  .thenAccept(
                      s -> {
                        if (!s) {
                          voidCharge(usage.requestId(), VoidReason.WRITE_FAILED);
                        }
                      }));
      ticket.respond(ex, HttpResponseStatus.OK, whole, X_DEVICE_TIME_NS, deviceNs);
    }
  }

  /** The error for a generation that ended without its answer (cancelled, timed out, failed). */
  private static ApiException unfinished(GenerationResult result) {
    UsageRecord usage = result.usage();
    FinishReason reason = result.finishReason();
    switch (reason) {
      case CANCELLED -> {
        return new ApiException(
            HttpResponseStatus.SERVICE_UNAVAILABLE,
            ApiException.SERVER,
            "The server is shutting down; the generation was stopped after "
                + usage.completionTokens()
                + " tokens (device time used so far is charged)."
                + " Retry on another replica or later.",
            null,
            "shutting_down");
      }
      case TIMEOUT -> {
        return new ApiException(
            HttpResponseStatus.GATEWAY_TIMEOUT,
            ApiException.SERVER,
            "The generation did not finish within the server's request timeout; it was"
                + " stopped after "
                + usage.completionTokens()
                + " tokens (device time used"
                + " is charged). Ask for fewer max_tokens or retry later.",
            null,
            "timeout");
      }
      case ERROR -> {
        if (result.error() instanceof ReplicaFailedException failed) {
          log.error(
              "generation {} ended: its replica on {} failed", usage.requestId(), failed.device());
          return new ApiException(
                  HttpResponseStatus.SERVICE_UNAVAILABLE,
                  ApiException.SERVER,
                  "The device this request ran on ("
                      + failed.device()
                      + ") failed and was taken out of rotation; the request was stopped after "
                      + usage.completionTokens()
                      + " tokens and charged only for the steps it ran (request id "
                      + usage.requestId()
                      + "). Retry: the model's other devices keep serving.",
                  null,
                  "device_failed")
              .withHeader(HttpHeaderNames.RETRY_AFTER, "1");
        }
        log.error("generation {} failed in the model", usage.requestId(), result.error());
        return new ApiException(
            HttpResponseStatus.INTERNAL_SERVER_ERROR,
            ApiException.SERVER,
            "The model failed while generating (request id "
                + usage.requestId()
                + "). Retry,"
                + " and report it if the error persists.",
            null,
            "model_error");
      }
      default -> throw new IllegalStateException("not an unfinished generation: " + reason);
    }
  }

  private void voidCharge(String requestId, VoidReason why) {
    log.warn("voiding the charge of {}: {}", requestId, why.dbName());
    billing
        .voidCharge(requestId, why)
        .whenComplete(
            (ok, err) -> {
              if (err != null) {
                log.error("void of {} ({}) not stored", requestId, why.dbName(), err);
              }
            });
  }

  static final String BILLING_UNAVAILABLE = "billing_unavailable";
  static final AsciiString X_DEVICE_TIME_NS = AsciiString.cached("x-gpumeter-device-time-ns");
  static final String RETRY_AFTER_SECONDS = "5";

  /** 503 before any work: the ledger cannot make a new charge durable now ({@code reason}). */
  static ApiException billingRefuses(String reason) {
    return new ApiException(
            HttpResponseStatus.SERVICE_UNAVAILABLE,
            ApiException.SERVER,
            "Completions are not accepted right now because their charges could not be recorded: "
                + reason
                + ". Nothing was generated or charged; retry later.",
            null,
            BILLING_UNAVAILABLE)
        .withHeader(HttpHeaderNames.RETRY_AFTER, RETRY_AFTER_SECONDS);
  }

  static ApiException rejected(AdmissionRejectedException e) {
    return switch (e.reason()) {
      case QUEUE_FULL ->
          new ApiException(
                  HttpResponseStatus.TOO_MANY_REQUESTS,
                  ApiException.RATE_LIMIT,
                  e.getMessage(),
                  null,
                  "queue_full")
              .withHeader(HttpHeaderNames.RETRY_AFTER, "1");
      case TOO_LONG ->
          new ApiException(
              HttpResponseStatus.BAD_REQUEST,
              ApiException.INVALID_REQUEST,
              e.getMessage() + ". Reduce the prompt or max_tokens.",
              "prompt",
              "context_length_exceeded");
      case SHUTTING_DOWN ->
          new ApiException(
              HttpResponseStatus.SERVICE_UNAVAILABLE,
              ApiException.SERVER,
              "The server is shutting down; retry on another replica or later.",
              null,
              "shutting_down");
    };
  }

  private static void writeCompletion(
      JsonGenerator g,
      String model,
      List<String> texts,
      GenerationResult result,
      LogprobsJson logprobs,
      List<LogprobsJson.Span> spans,
      Receipt receipt)
      throws IOException {
    UsageRecord u = result.usage();
    g.writeStartObject();
    g.writeStringField("id", u.requestId());
    g.writeStringField("object", "text_completion");
    g.writeNumberField("created", u.startedAt().getEpochSecond());
    g.writeStringField("model", model);
    g.writeArrayFieldStart("choices");
    for (Choice c : result.choices()) {
      g.writeStartObject();
      g.writeStringField("text", texts.get(c.index()));
      g.writeNumberField("index", c.index());
      if (logprobs != null) {
        logprobs.writeCompletion(g, "logprobs", spans.get(c.index()), 0);
      } else {
        g.writeNullField("logprobs");
      }
      g.writeStringField("finish_reason", c.finishReason().openAiName());
      g.writeEndObject();
    }
    g.writeEndArray();
    writeUsage(g, u, receipt);
    g.writeEndObject();
  }

  /**
   * The {@code usage} object: tokens, the device time charged (the stored record's figures) and its
   * cost ({@link Receipt}).
   */
  static void writeUsage(JsonGenerator g, UsageRecord u, Receipt receipt) throws IOException {
    TimerInfo timer = u.timer();
    g.writeObjectFieldStart("usage");
    g.writeNumberField("prompt_tokens", u.promptTokens());
    g.writeNumberField("completion_tokens", u.completionTokens());
    g.writeNumberField("total_tokens", (long) u.promptTokens() + u.completionTokens());
    Json.writeMillis(g, "device_time_ms", u.deviceNs());
    g.writeNumberField("device_time_ns", u.deviceNs());
    g.writeNumberField("prefill_time_ns", u.prefillNs());
    g.writeNumberField("decode_time_ns", u.decodeNs());
    g.writeStringField("device", timer.device());
    g.writeStringField("device_name", timer.deviceName());
    g.writeStringField("timer", timer.timerKind());
    receipt.writeJson(g);
    g.writeEndObject();
  }

  /** 128 random bits as 32 hex digits (ledger primary key: must not collide). */
  private static String newId() {
    UUID u = UUID.randomUUID();
    return hex(u.getMostSignificantBits()) + hex(u.getLeastSignificantBits());
  }

  private static String hex(long v) {
    String s = Long.toHexString(v);
    return s.length() == 16 ? s : "0".repeat(16 - s.length()) + s;
  }
}
