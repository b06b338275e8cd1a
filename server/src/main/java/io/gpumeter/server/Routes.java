package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import com.github.benmanes.caffeine.cache.Ticker;
import io.gpumeter.batching.ReplicaRouter;
import io.gpumeter.billing.Billing;
import io.gpumeter.billing.CostBucketRow;
import io.gpumeter.billing.DatabaseDurability;
import io.gpumeter.billing.LedgerHealth;
import io.gpumeter.billing.UsageBucketRow;
import io.gpumeter.metering.TimerInfo;
import io.netty.buffer.Unpooled;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.io.IOException;
import java.time.Clock;
import java.time.Duration;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;

/**
 * Maps method and path to an endpoint. Shared by all connections; holds no per-request state.
 *
 * <p>Order of checks: unknown path (404), then method (405), then the endpoint's own authentication
 * (401) and validation (400). {@code /healthz}, {@code /readyz} and {@code /metrics} need no key;
 * everything under {@code /v1} does; {@code /admin/} takes the admin token and is a 404 when none
 * is configured. {@code /console} is the web console ({@link ConsoleEndpoint}): a request without
 * {@code Authorization} may be authenticated by its session cookie instead, and its CSRF token is
 * checked here, before any endpoint runs.
 */
final class Routes {
  /** Longest a readiness probe waits for the database before answering degraded. */
  static final Duration READY_DB_CHECK_TIMEOUT = Duration.ofSeconds(2);

  private final Map<String, ModelEndpoint> models;
  private final Authenticator auth;
  private final CompletionsEndpoint completions;
  private final ChatCompletionsEndpoint chat;
  private final UsageEndpoint usage;
  private final RequestsEndpoint requests;
  private final BalanceEndpoint balance;
  private final InvoicesEndpoint invoices;
  private final UsageCompletionsEndpoint<UsageBucketRow> usageCompletions;
  private final UsageCompletionsEndpoint<CostBucketRow> costs;
  private final AdminEndpoint admin;
  private final MetricsWriter metrics;
  private final Readiness readiness;
  private final Billing billing;
  private final Executor blocking;
  private final ModelAdmin modelAdmin;
  private final ConsoleSessions consoleSessions;
  private final ConsoleEndpoint console;

  Routes(
      Map<String, ModelEndpoint> models,
      ModelAdmin modelAdmin,
      Billing billing,
      Executor blocking,
      ServerConfig config,
      ServerMetrics serverMetrics,
      Readiness readiness) {
    this.models = models;
    this.modelAdmin = modelAdmin;
    AuthThrottle throttle = new AuthThrottle(config.authMaxFailures(), config.authFailureWindow());
    this.auth = new Authenticator(billing.apiKeys(), blocking, throttle);
    BalanceCache balances =
        new BalanceCache(
            id -> billing.accounting().balance(id),
            blocking,
            config.balanceCacheTtl(),
            Ticker.systemTicker());
    SpendMetrics spend = new SpendMetrics(config.spendAccounts(), config.spendTopAccounts());
    this.completions =
        new CompletionsEndpoint(
            models,
            auth,
            billing,
            serverMetrics,
            config.maxTokensDefault(),
            config.maxTokensCap(),
            config.streamBufferBytes(),
            new IdempotencyGate(
                billing.idempotencyKeys(), blocking, IdempotencyGate.lease(config), balances),
            balances,
            spend);
    this.chat =
        new ChatCompletionsEndpoint(
            models, auth, completions, config.maxTokensDefault(), config.maxTokensCap());
    this.usage = new UsageEndpoint(auth, billing.usage(), blocking, Clock.systemUTC());
    Duration rawRetention = config.retention() == null ? null : config.retention().retention();
    this.usageCompletions =
        new UsageCompletionsEndpoint<>(
            auth,
            billing.usage(),
            blocking,
            Clock.systemUTC(),
            rawRetention,
            UsageCompletionsEndpoint.COMPLETIONS);
    this.costs =
        new UsageCompletionsEndpoint<>(
            auth,
            billing.usage(),
            blocking,
            Clock.systemUTC(),
            rawRetention,
            UsageCompletionsEndpoint.COSTS);
    this.requests = new RequestsEndpoint(auth, billing.usage(), blocking);
    this.balance = new BalanceEndpoint(auth, billing.accounting(), blocking, Clock.systemUTC());
    this.invoices = new InvoicesEndpoint(auth, billing.accounting(), blocking);
    this.admin =
        new AdminEndpoint(
            config.adminToken(),
            billing.reconciliation(),
            billing.apiKeys(),
            throttle,
            billing::replaySetAside,
            blocking,
            Clock.systemUTC(),
            new ModelAdminEndpoint(modelAdmin, blocking),
            new AdminV1Endpoint(
                billing.accounting(),
                billing.apiKeys(),
                blocking,
                Clock.systemUTC(),
                config.priceMinLead()));
    this.consoleSessions = new ConsoleSessions(Clock.systemUTC(), config.consoleSessionTtl());
    this.console = new ConsoleEndpoint(consoleSessions, auth, admin);
    this.metrics = new MetricsWriter(models.values(), serverMetrics, readiness, billing);
    spend.register(serverMetrics.registry(), serverMetrics.properties(), balances::cached);
    this.readiness = readiness;
    this.billing = billing;
    this.blocking = blocking;
  }

  void dispatch(Exchange ex) {
    String path = ex.path();
    checkConsoleSession(ex);
    switch (path) {
      case "/v1/completions" -> {
        allow(ex, HttpMethod.POST, "POST");
        completions.handle(ex);
      }
      case "/v1/chat/completions" -> {
        allow(ex, HttpMethod.POST, "POST");
        chat.handle(ex);
      }
      case "/v1/usage" -> {
        allow(ex, HttpMethod.GET, "GET");
        usage.handle(ex);
      }
      case UsageCompletionsEndpoint.PATH -> {
        allow(ex, HttpMethod.GET, "GET");
        usageCompletions.handle(ex);
      }
      case RequestsEndpoint.PATH -> {
        allow(ex, HttpMethod.GET, "GET");
        requests.handle(ex);
      }
      case BalanceEndpoint.PATH -> {
        allow(ex, HttpMethod.GET, "GET");
        balance.handle(ex);
      }
      case InvoicesEndpoint.PATH -> {
        allow(ex, HttpMethod.GET, "GET");
        invoices.list(ex);
      }
      case UsageCompletionsEndpoint.COSTS_PATH -> {
        allow(ex, HttpMethod.GET, "GET");
        costs.handle(ex);
      }
      case "/v1/models" -> {
        allow(ex, HttpMethod.GET, "GET");
        ex.then(auth.authenticate(ex), p -> listModels(ex));
      }
      case "/healthz" -> {
        allow(ex, HttpMethod.GET, "GET");
        ex.respondJson(
            HttpResponseStatus.OK,
            g -> {
              g.writeStartObject();
              g.writeStringField("status", "ok");
              g.writeEndObject();
            });
      }
      case "/readyz" -> {
        allow(ex, HttpMethod.GET, "GET");
        ready(ex);
      }
      case "/metrics" -> {
        allow(ex, HttpMethod.GET, "GET");
        MetricsWriter.Exposition out =
            metrics.write(ex.request().headers().get(HttpHeaderNames.ACCEPT));
        ex.respond(
            HttpResponseStatus.OK,
            Unpooled.wrappedBuffer(out.body()),
            out.contentType(),
            null,
            null);
      }
      default -> {
        if (path.equals(ConsoleEndpoint.PREFIX) || path.startsWith(ConsoleEndpoint.PREFIX + "/")) {
          console.handle(ex);
          return;
        }
        if (path.startsWith("/admin/")) {
          admin.handle(ex);
          return;
        }
        if (path.startsWith(InvoicesEndpoint.PREFIX)) {
          allow(ex, HttpMethod.GET, "GET");
          invoices.show(ex, path.substring(InvoicesEndpoint.PREFIX.length()));
          return;
        }
        if (path.startsWith("/v1/models/")) {
          allow(ex, HttpMethod.GET, "GET");
          String name = path.substring("/v1/models/".length());
          ex.then(auth.authenticate(ex), p -> retrieveModel(ex, name));
          return;
        }
        throw unknownUrl(ex);
      }
    }
  }

  /**
   * Resolves the console session cookie of a request without an {@code Authorization} header
   * ({@link ConsoleSessions}), and refuses (403 {@code csrf_token_invalid}) a state-changing
   * request that a live session would authenticate unless its {@code X-CSRF-Token} is the session's
   * token. Only the sign-in itself ({@code POST /console/session}) needs none: it does not use the
   * cookie.
   */
  private void checkConsoleSession(Exchange ex) {
    ConsoleSessions.Lookup lookup = consoleSessions.resolve(ex.request());
    ex.console(lookup);
    ConsoleSessions.Session s = lookup.session();
    if (s == null || !changesState(ex.request().method())) {
      return;
    }
    if (ex.request().method().equals(HttpMethod.POST)
        && ex.path().equals(ConsoleEndpoint.SESSION_PATH)) {
      return;
    }
    if (!s.csrfMatches(ex.request().headers().get(ConsoleEndpoint.CSRF_HEADER))) {
      throw new ApiException(
          HttpResponseStatus.FORBIDDEN,
          ApiException.INVALID_REQUEST,
          "A request authenticated by the console session cookie that changes state must carry"
              + " the session's X-CSRF-Token header (from the sign-in answer or GET"
              + " /console/session).",
          null,
          "csrf_token_invalid");
    }
  }

  /** Every method but GET, HEAD, OPTIONS and TRACE. */
  static boolean changesState(HttpMethod m) {
    return !(m.equals(HttpMethod.GET)
        || m.equals(HttpMethod.HEAD)
        || m.equals(HttpMethod.OPTIONS)
        || m.equals(HttpMethod.TRACE));
  }

  static ApiException unknownUrl(Exchange ex) {
    return new ApiException(
        HttpResponseStatus.NOT_FOUND,
        ApiException.INVALID_REQUEST,
        "Invalid URL (" + ex.request().method() + " " + ex.path() + ")",
        null,
        "unknown_url");
  }

  static void allow(Exchange ex, HttpMethod allowed, String allowHeader) {
    if (!ex.request().method().equals(allowed)) {
      throw new ApiException(
              HttpResponseStatus.METHOD_NOT_ALLOWED,
              ApiException.INVALID_REQUEST,
              "Method "
                  + ex.request().method()
                  + " is not allowed for "
                  + ex.path()
                  + "; use "
                  + allowHeader
                  + ".",
              null,
              "method_not_allowed")
          .withHeader(HttpHeaderNames.ALLOW, allowHeader);
    }
  }

  private void listModels(Exchange ex) {
    ex.respondJson(
        HttpResponseStatus.OK,
        g -> {
          g.writeStartObject();
          g.writeStringField("object", "list");
          g.writeArrayFieldStart("data");
          for (ModelEndpoint m : models.values()) {
            writeModel(g, m);
          }
          g.writeEndArray();
          writeFailures(g, modelAdmin.failures());
          g.writeEndObject();
        });
  }

  private void retrieveModel(Exchange ex, String name) {
    ModelEndpoint m = models.get(name);
    if (m == null) {
      throw modelNotFound(name);
    }
    ex.respondJson(HttpResponseStatus.OK, g -> writeModel(g, m));
  }

  static ApiException modelNotFound(String name) {
    return new ApiException(
        HttpResponseStatus.NOT_FOUND,
        ApiException.INVALID_REQUEST,
        "The model '" + name + "' does not exist.",
        "model",
        "model_not_found");
  }

  /**
   * {@code model_failures}: each model directory that failed to load, with the reason (empty when
   * none did).
   */
  static void writeFailures(JsonGenerator g, Map<java.nio.file.Path, String> failures)
      throws IOException {
    g.writeArrayFieldStart("model_failures");
    for (Map.Entry<java.nio.file.Path, String> f : failures.entrySet()) {
      g.writeStartObject();
      g.writeStringField("directory", f.getKey().toString());
      g.writeStringField("reason", f.getValue());
      g.writeEndObject();
    }
    g.writeEndArray();
  }

  static void writeModel(JsonGenerator g, ModelEndpoint m) throws IOException {
    g.writeStartObject();
    g.writeStringField("id", m.name());
    g.writeStringField("object", "model");
    g.writeNumberField("created", m.loadedAt().getEpochSecond());
    g.writeStringField("owned_by", "gpumeter");
    g.writeNumberField("context_length", m.model().config().contextLength());
    g.writeStringField("dtype", m.model().config().dtype());
    if (m.model() instanceof io.gpumeter.model.DjlLanguageModel djl) {
      g.writeNumberField("parameters", djl.parameters().count());
      g.writeNumberField("parameter_bytes", djl.parameters().bytes());
      g.writeNumberField("kv_cache_bytes_per_slot", djl.bytesPerSlot());
    }
    g.writeStringField("tokenizer", m.model().config().tokenizer());
    g.writeStringField("device", m.timer().device());
    g.writeStringField("device_name", m.timer().deviceName());
    g.writeStringField("timer", m.timer().timerKind());
    g.writeEndObject();
  }

  /**
   * 503 while starting or shutting down, and while the ledger cannot make a new charge durable
   * ({@link Billing#health()} not ready: database down and outbox full, queue full); else 200. The
   * answer says {@code "degraded": true} and why when charges are going to the outbox (circuit
   * breaker open) or the database does not answer {@link Billing#health(Duration)}'s check within
   * {@link #READY_DB_CHECK_TIMEOUT}: the server still serves, metered, but API keys not in the
   * cache cannot be checked.
   */
  private void ready(Exchange ex) {
    String why = readiness.reason();
    if (why != null) {
      notReady(ex, why, null);
      return;
    }
    LedgerHealth health = billing.health();
    if (!health.ready()) {
      notReady(ex, health.reason(), health);
      return;
    }
    if (health.degraded()) {
      // The breaker already knows the database is down: no need to wait for a ping.
      ready(ex, health.reason(), health);
      return;
    }
    CompletableFuture<LedgerHealth> checked;
    try {
      // null when the check did not finish in time
      checked =
          CompletableFuture.supplyAsync(() -> billing.health(READY_DB_CHECK_TIMEOUT), blocking)
              .completeOnTimeout(null, READY_DB_CHECK_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
    } catch (RejectedExecutionException e) {
      notReady(ex, "overloaded", health);
      return;
    }
    ex.then(
        checked,
        checkedHealth -> {
          String now = readiness.reason();
          LedgerHealth h = checkedHealth != null ? checkedHealth : billing.health();
          if (now != null) {
            notReady(ex, now, h);
          } else if (!h.ready()) {
            notReady(ex, h.reason(), h);
          } else if (checkedHealth == null) {
            ready(
                ex,
                "degraded: the billing database did not answer within "
                    + READY_DB_CHECK_TIMEOUT.toMillis()
                    + " ms; charges will go to the outbox ("
                    + h.outboxBytes()
                    + " of "
                    + h.outboxMaxBytes()
                    + " bytes used) and only cached API keys are accepted",
                h);
          } else {
            ready(ex, h.degraded() ? h.reason() : null, h);
          }
        });
  }

  private void ready(Exchange ex, String degradedBecause, LedgerHealth h) {
    ex.respondJson(
        HttpResponseStatus.OK,
        g -> {
          g.writeStartObject();
          g.writeStringField("status", "ready");
          g.writeBooleanField("degraded", degradedBecause != null);
          if (degradedBecause != null) {
            g.writeStringField("reason", degradedBecause);
          }
          g.writeArrayFieldStart("models");
          for (String name : models.keySet()) {
            g.writeString(name);
          }
          g.writeEndArray();
          writeReplicas(g);
          writeFailures(g, modelAdmin.failures());
          writeLedger(g, h);
          // this replica's id in the ledger (outbox owner): what reconcile --replica takes
          g.writeStringField("ledger_replica", billing.replicaId().toString());
          writeDatabaseDurability(g, billing.databaseDurability());
          g.writeEndObject();
        });
  }

  /**
   * {@code replicas}: each replica of each served model (one per device), its device and its state:
   * {@code serving}, or {@code failed} with the reason once it was taken out of rotation.
   */
  private void writeReplicas(JsonGenerator g) throws IOException {
    g.writeArrayFieldStart("replicas");
    for (ModelEndpoint m : models.values()) {
      for (ReplicaRouter.Replica r : m.scheduler().replicas()) {
        TimerInfo t = r.scheduler().timerInfo();
        g.writeStartObject();
        g.writeStringField("model", m.name());
        g.writeNumberField("replica", r.index());
        g.writeStringField("device", t.device());
        g.writeNumberField("device_index", t.deviceIndex());
        g.writeStringField("device_name", t.deviceName());
        g.writeStringField("device_uuid", t.deviceUuid());
        g.writeStringField("state", r.state().name().toLowerCase(Locale.ROOT));
        Throwable failure = r.failure();
        if (failure != null) {
          Throwable cause = failure.getCause() != null ? failure.getCause() : failure;
          g.writeStringField("reason", String.valueOf(cause.getMessage()));
        }
        g.writeNumberField("running", r.scheduler().stats().running());
        g.writeNumberField("waiting_tokens", r.scheduler().waitingTokens());
        g.writeEndObject();
      }
    }
    g.writeEndArray();
  }

  /**
   * {@code database_durability}: the database's settings as read at start, whether they keep a
   * committed charge through an OS crash ({@code safe}), and a {@code warning} when durable mode
   * runs on an unsafe database because {@code ledger.allow_unsafe_database} said so.
   */
  private static void writeDatabaseDurability(JsonGenerator g, DatabaseDurability d)
      throws IOException {
    g.writeObjectFieldStart("database_durability");
    g.writeStringField("fsync", d.fsync());
    g.writeStringField("full_page_writes", d.fullPageWrites());
    g.writeStringField("synchronous_commit", d.synchronousCommit());
    g.writeBooleanField("safe", d.safe());
    g.writeBooleanField("unsafe_allowed", d.unsafeAllowed());
    if (d.unsafeAllowed()) {
      g.writeStringField(
          "warning",
          "UNSAFE: durable mode runs on a database with "
              + String.join(", ", d.problems())
              + " (ledger.allow_unsafe_database=true); an OS crash or power loss can lose"
              + " acknowledged charges");
    }
    g.writeEndObject();
  }

  private static void writeLedger(JsonGenerator g, LedgerHealth h) throws IOException {
    if (h == null) {
      return;
    }
    g.writeObjectFieldStart("ledger");
    g.writeStringField("durability", h.durability().name().toLowerCase(Locale.ROOT));
    g.writeStringField("breaker", h.breakerState());
    g.writeNumberField("queue_depth", h.queueDepth());
    g.writeNumberField("outbox_bytes", h.outboxBytes());
    g.writeNumberField("outbox_max_bytes", h.outboxMaxBytes());
    g.writeNumberField("dead_lettered_records", h.deadLetteredRecords());
    g.writeNumberField("quarantined_segments", h.quarantinedSegments());
    g.writeNumberField("quarantined_records", h.quarantinedRecords());
    g.writeNumberField("dead_letters_waiting", h.deadLettersWaiting());
    g.writeEndObject();
  }

  private void notReady(Exchange ex, String why, LedgerHealth h) {
    ex.respondJson(
        HttpResponseStatus.SERVICE_UNAVAILABLE,
        g -> {
          g.writeStartObject();
          g.writeStringField("status", "not_ready");
          g.writeStringField("reason", why);
          writeReplicas(g);
          writeLedger(g, h);
          // this replica's id in the ledger (outbox owner): what reconcile --replica takes
          g.writeStringField("ledger_replica", billing.replicaId().toString());
          writeDatabaseDurability(g, billing.databaseDurability());
          g.writeEndObject();
        });
  }
}
