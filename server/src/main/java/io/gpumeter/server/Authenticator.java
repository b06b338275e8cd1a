package io.gpumeter.server;

import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.keys.ApiKeys;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code Authorization: Bearer <key>} to an {@link ApiKeyPrincipal}. The header is checked on the
 * event loop; the lookup (cached, but it may go to the database) runs on the blocking executor.
 */
final class Authenticator {
  private static final Logger log = LoggerFactory.getLogger(Authenticator.class);
  private static final String BEARER = "Bearer ";

  private final ApiKeys keys;
  private final Executor blocking;

  Authenticator(ApiKeys keys, Executor blocking) {
    this.keys = keys;
    this.blocking = blocking;
  }

  /**
   * @return the caller, or a future failed with an {@link ApiException}: 401 for a wrong key, 503
   *     when keys cannot be checked
   * @throws ApiException 401 at once when the header is missing or not Bearer
   */
  CompletableFuture<ApiKeyPrincipal> authenticate(HttpRequest request) {
    String header = request.headers().get(HttpHeaderNames.AUTHORIZATION);
    if (header == null || header.isBlank()) {
      throw unauthorized(
          "You didn't provide an API key. Provide it in an Authorization header using Bearer"
              + " auth (Authorization: Bearer YOUR_KEY). Keys are made with"
              + " `java -jar gpumeter-server.jar create-key --account NAME`.",
          "missing_api_key");
    }
    if (!header.regionMatches(true, 0, BEARER, 0, BEARER.length())) {
      throw unauthorized(
          "The Authorization header must use Bearer auth (Authorization: Bearer YOUR_KEY).",
          "invalid_authorization_header");
    }
    String key = header.substring(BEARER.length()).trim();
    if (key.isEmpty()) {
      throw unauthorized(
          "You didn't provide an API key after 'Bearer' in the Authorization header.",
          "missing_api_key");
    }
    if (!ApiKeys.isWellFormed(key)) {
      return CompletableFuture.failedFuture(incorrect(key));
    }
    try {
      return CompletableFuture.supplyAsync(() -> lookup(key), blocking);
    } catch (RejectedExecutionException e) {
      throw overloaded();
    }
  }

  private ApiKeyPrincipal lookup(String key) {
    try {
      return keys.authenticate(key).orElseThrow(() -> incorrect(key));
    } catch (ApiException e) {
      throw e;
    } catch (RuntimeException e) {
      log.warn("API key lookup failed", e);
      throw new ApiException(
          HttpResponseStatus.SERVICE_UNAVAILABLE,
          ApiException.SERVER,
          "API keys cannot be checked right now (the billing database is unavailable); retry"
              + " later.",
          null,
          "auth_unavailable");
    }
  }

  static ApiException overloaded() {
    return new ApiException(
        HttpResponseStatus.SERVICE_UNAVAILABLE,
        ApiException.SERVER,
        "The server is overloaded; retry later.",
        null,
        "overloaded");
  }

  private static ApiException unauthorized(String message, String code) {
    return new ApiException(
        HttpResponseStatus.UNAUTHORIZED, ApiException.INVALID_REQUEST, message, null, code);
  }

  private static ApiException incorrect(String key) {
    return unauthorized(
        "Incorrect API key provided: "
            + mask(key)
            + ". Check the key, or create one with"
            + " `create-key --account NAME`.",
        "invalid_api_key");
  }

  /** Shows at most the first 6 and last 4 characters, never the whole key. */
  static String mask(String key) {
    if (key.length() <= 12) {
      return "*".repeat(Math.min(key.length(), 8));
    }
    String shown =
        key.length() > 64
            ? key.substring(0, 6) + "***"
            : key.substring(0, 6) + "***" + key.substring(key.length() - 4);
    return shown.replaceAll("[^\\x20-\\x7e]", "?");
  }
}
