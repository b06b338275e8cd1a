package io.gpumeter.server;

import io.gpumeter.billing.Billing;
import io.netty.buffer.ByteBufUtil;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.util.AsciiString;
import java.sql.Connection;
import java.time.Clock;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import javax.sql.DataSource;

/**
 * Maps method and path to an endpoint. Shared by all connections; holds no per-request state.
 *
 * <p>Order of checks: unknown path (404), then method (405), then the endpoint's own authentication
 * (401) and validation (400). {@code /healthz}, {@code /readyz} and {@code /metrics} need no key;
 * everything under {@code /v1} does.
 */
final class Routes {
  static final AsciiString PROMETHEUS_TEXT =
      AsciiString.cached("text/plain; version=0.0.4; charset=utf-8");

  private final Map<String, ModelEndpoint> models;
  private final Authenticator auth;
  private final CompletionsEndpoint completions;
  private final UsageEndpoint usage;
  private final MetricsWriter metrics;
  private final Readiness readiness;
  private final DataSource dataSource;
  private final Executor blocking;

  Routes(
      Map<String, ModelEndpoint> models,
      Billing billing,
      Executor blocking,
      ServerConfig config,
      HttpMetrics httpMetrics,
      Readiness readiness) {
    this.models = models;
    this.auth = new Authenticator(billing.apiKeys(), blocking);
    this.completions =
        new CompletionsEndpoint(models, auth, config.maxTokensDefault(), config.maxTokensCap());
    this.usage = new UsageEndpoint(auth, billing.usage(), blocking, Clock.systemUTC());
    this.metrics = new MetricsWriter(models, httpMetrics, readiness, billing.ledger());
    this.readiness = readiness;
    this.dataSource = billing.database().dataSource();
    this.blocking = blocking;
  }

  void dispatch(Exchange ex) {
    String path = ex.path();
    HttpMethod method = ex.request().method();
    switch (path) {
      case "/v1/completions" -> {
        allow(ex, HttpMethod.POST, "POST");
        completions.handle(ex);
      }
      case "/v1/usage" -> {
        allow(ex, HttpMethod.GET, "GET");
        usage.handle(ex);
      }
      case "/v1/models" -> {
        allow(ex, HttpMethod.GET, "GET");
        ex.then(auth.authenticate(ex.request()), p -> listModels(ex));
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
        String text = metrics.write();
        ex.respond(
            HttpResponseStatus.OK,
            ByteBufUtil.writeAscii(ex.alloc(), text),
            PROMETHEUS_TEXT,
            null,
            null);
      }
      default -> {
        if (path.startsWith("/v1/models/")) {
          allow(ex, HttpMethod.GET, "GET");
          String name = path.substring("/v1/models/".length());
          ex.then(auth.authenticate(ex.request()), p -> retrieveModel(ex, name));
          return;
        }
        throw new ApiException(
            HttpResponseStatus.NOT_FOUND,
            ApiException.INVALID_REQUEST,
            "Invalid URL (" + method + " " + path + ")",
            null,
            "unknown_url");
      }
    }
  }

  private static void allow(Exchange ex, HttpMethod allowed, String allowHeader) {
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
          g.writeEndObject();
        });
  }

  private void retrieveModel(Exchange ex, String name) {
    ModelEndpoint m = models.get(name);
    if (m == null) {
      throw new ApiException(
          HttpResponseStatus.NOT_FOUND,
          ApiException.INVALID_REQUEST,
          "The model '" + name + "' does not exist.",
          "model",
          "model_not_found");
    }
    ex.respondJson(HttpResponseStatus.OK, g -> writeModel(g, m));
  }

  private static void writeModel(com.fasterxml.jackson.core.JsonGenerator g, ModelEndpoint m)
      throws java.io.IOException {
    g.writeStartObject();
    g.writeStringField("id", m.name());
    g.writeStringField("object", "model");
    g.writeNumberField("created", m.loadedAt().getEpochSecond());
    g.writeStringField("owned_by", "gpumeter");
    g.writeNumberField("context_length", m.model().config().contextLength());
    g.writeStringField("device", m.timer().device());
    g.writeStringField("device_name", m.timer().deviceName());
    g.writeStringField("timer", m.timer().timerKind());
    g.writeEndObject();
  }

  /** 200 only when the models are warmed, the listener is up and the database answers. */
  private void ready(Exchange ex) {
    String why = readiness.reason();
    if (why != null) {
      notReady(ex, why);
      return;
    }
    CompletableFuture<String> db;
    try {
      db = CompletableFuture.supplyAsync(this::checkDatabase, blocking);
    } catch (RejectedExecutionException e) {
      notReady(ex, "overloaded");
      return;
    }
    ex.then(
        db,
        problem -> {
          String now = readiness.reason();
          if (now != null) {
            notReady(ex, now);
          } else if (problem != null) {
            notReady(ex, problem);
          } else {
            ex.respondJson(
                HttpResponseStatus.OK,
                g -> {
                  g.writeStartObject();
                  g.writeStringField("status", "ready");
                  g.writeArrayFieldStart("models");
                  for (String name : models.keySet()) {
                    g.writeString(name);
                  }
                  g.writeEndArray();
                  g.writeEndObject();
                });
          }
        });
  }

  /** Null when the database answers, else why not. */
  private String checkDatabase() {
    try (Connection c = dataSource.getConnection()) {
      return c.isValid(2) ? null : "database did not answer";
    } catch (Exception e) {
      return "database unreachable: " + e.getMessage();
    }
  }

  private static void notReady(Exchange ex, String why) {
    ex.respondJson(
        HttpResponseStatus.SERVICE_UNAVAILABLE,
        g -> {
          g.writeStartObject();
          g.writeStringField("status", "not_ready");
          g.writeStringField("reason", why);
          g.writeEndObject();
        });
  }
}
