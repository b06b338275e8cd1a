package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.model.ModelException;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.io.IOException;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code POST /admin/models/load} with {@code {"directory": PATH}} (a model directory on the
 * server's file system) answers the loaded model as {@code /v1/models/{id}} shows it; {@code POST
 * /admin/models/{id}/unload} answers {@code {"id", "object": "model", "unloaded": true}} once the
 * model's running sequences finished and it is freed. Errors: 400 {@code model_load_failed} with
 * the reason (invalid directory or {@code model.json}, a name already served, a load or warm-up
 * failure), 404 {@code model_not_found}. Reached through {@link AdminEndpoint}, which checks the
 * admin token and the method first.
 */
final class ModelAdminEndpoint {
  static final String PREFIX = "/admin/models/";
  private static final Logger log = LoggerFactory.getLogger(ModelAdminEndpoint.class);

  private final ModelAdmin admin;
  private final Executor blocking;

  ModelAdminEndpoint(ModelAdmin admin, Executor blocking) {
    this.admin = admin;
    this.blocking = blocking;
  }

  void handle(Exchange ex) {
    String rest = ex.path().substring(PREFIX.length());
    if (rest.equals("load")) {
      load(ex, directory(ex));
      return;
    }
    int slash = rest.indexOf('/');
    if (slash > 0 && rest.substring(slash + 1).equals("unload")) {
      unload(ex, rest.substring(0, slash));
      return;
    }
    throw Routes.unknownUrl(ex);
  }

  private static Path directory(Exchange ex) {
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
          "The body must be a JSON object: {\"directory\": \"PATH\"}.",
          null,
          "invalid_json");
    }
    for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
      String name = it.next();
      if (!name.equals("directory")) {
        throw ApiException.invalid(name, "Unrecognized request argument supplied: " + name);
      }
    }
    JsonNode dir = root.get("directory");
    if (dir == null || dir.isNull()) {
      throw ApiException.missing("directory");
    }
    if (!dir.isTextual()) {
      throw ApiException.wrongType("directory", "a string", dir.getNodeType().toString());
    }
    try {
      return Path.of(dir.asText());
    } catch (InvalidPathException e) {
      throw ApiException.invalid("directory", "Not a valid path: " + e.getMessage());
    }
  }

  private void load(Exchange ex, Path dir) {
    CompletableFuture<ModelEndpoint> loaded;
    try {
      loaded = CompletableFuture.supplyAsync(() -> admin.load(dir), blocking);
    } catch (RejectedExecutionException e) {
      throw Authenticator.overloaded();
    }
    ex.then(
        loaded.exceptionally(
            e -> {
              Throwable cause = Exchange.unwrap(e);
              log.warn("admin load of model directory {} failed: {}", dir, cause.toString());
              if (cause instanceof ModelException) {
                throw new ApiException(
                    HttpResponseStatus.BAD_REQUEST,
                    ApiException.INVALID_REQUEST,
                    "The model directory " + dir + " was not loaded: " + cause.getMessage(),
                    "directory",
                    "model_load_failed");
              }
              throw new ApiException(
                  HttpResponseStatus.INTERNAL_SERVER_ERROR,
                  ApiException.SERVER,
                  "Loading " + dir + " failed: " + cause,
                  "directory",
                  "model_load_failed");
            }),
        m -> {
          log.info("admin from {} loaded model {} from {}", ex.remoteAddress(), m.name(), dir);
          ex.respondJson(HttpResponseStatus.OK, g -> Routes.writeModel(g, m));
        });
  }

  private void unload(Exchange ex, String name) {
    CompletableFuture<Boolean> done;
    try {
      done = CompletableFuture.supplyAsync(() -> admin.unload(name), blocking);
    } catch (RejectedExecutionException e) {
      throw Authenticator.overloaded();
    }
    ex.then(
        done,
        unloaded -> {
          if (!unloaded) {
            throw Routes.modelNotFound(name);
          }
          log.info("admin from {} unloaded model {}", ex.remoteAddress(), name);
          ex.respondJson(
              HttpResponseStatus.OK,
              g -> {
                g.writeStartObject();
                g.writeStringField("id", name);
                g.writeStringField("object", "model");
                g.writeBooleanField("unloaded", true);
                g.writeEndObject();
              });
        });
  }
}
