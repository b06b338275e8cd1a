package io.gpumeter.server;

import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.keys.ApiKeys;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.net.SocketAddress;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code Authorization: Bearer <key>} to an {@link ApiKeyPrincipal}. The client's address is
 * checked against the {@link AuthThrottle} first (429 while it is throttled), then the header, on
 * the event loop; a key the cache holds as valid is answered there, complete (no hop), and any
 * other lookup (it may go to the database) runs on the blocking executor. Every 401 counts as a
 * failure of the client's address.
 *
 * <p>A request without an {@code Authorization} header but with a console session cookie ({@link
 * ConsoleSessions}) is authenticated by the key its session holds, through the same lookup.
 */
final class Authenticator {
  private static final Logger log = LoggerFactory.getLogger(Authenticator.class);
  private static final String BEARER = "Bearer ";

  private final ApiKeys keys;
  private final Executor blocking;
  private final AuthThrottle throttle;

  Authenticator(ApiKeys keys, Executor blocking, AuthThrottle throttle) {
    this.keys = keys;
    this.blocking = blocking;
    this.throttle = throttle;
  }

  /**
   * @return the caller, or a future failed with an {@link ApiException}: 401 for a wrong key, 503
   *     when keys cannot be checked
   * @throws ApiException 429 at once when the client's address is throttled, 401 at once when the
   *     header is missing or not Bearer
   */
  CompletableFuture<ApiKeyPrincipal> authenticate(Exchange ex) {
    SocketAddress from = ex.remoteAddress();
    throttle.check(from);
    try {
      if (!ex.request().headers().contains(HttpHeaderNames.AUTHORIZATION)
          && ex.console().cookieSent()) {
        return authenticateSession(ex.console(), from);
      }
      return authenticate(ex.request(), from);
    } catch (ApiException e) {
      if (e.status().equals(HttpResponseStatus.UNAUTHORIZED)) {
        throttle.recordFailure(from);
      }
      throw e;
    }
  }

  /**
   * Checks {@code key} as a sign-in to the console: throttled and counted like a bearer key.
   *
   * @return the key's principal, or a future failed with 401 / 503 as {@link #authenticate}
   */
  CompletableFuture<ApiKeyPrincipal> authenticateKey(Exchange ex, String key) {
    SocketAddress from = ex.remoteAddress();
    throttle.check(from);
    return lookupAsync(key, from);
  }

  /**
   * A request with no {@code Authorization} header but a console session cookie: the key of a key
   * session, looked up again (cached; a revoked key is refused as for a bearer request). An unknown
   * or expired session, or an operator session, is a 401.
   */
  private CompletableFuture<ApiKeyPrincipal> authenticateSession(
      ConsoleSessions.Lookup console, SocketAddress from) {
    ConsoleSessions.Session s = console.session();
    if (s == null) {
      throw unauthorized(
          "Your console session has expired or was signed out; sign in again.", "session_expired");
    }
    if (s.kind() != ConsoleSessions.Kind.KEY) {
      throw unauthorized(
          "An operator console session cannot call the customer API; sign in with an API key.",
          "operator_session");
    }
    return lookupAsync(s.apiKey(), from);
  }

  // package-private for CachedKeyOnLoopTest
  CompletableFuture<ApiKeyPrincipal> lookupAsync(String key, SocketAddress from) {
    if (!ApiKeys.isWellFormed(key)) {
      throttle.recordFailure(from);
      return CompletableFuture.failedFuture(incorrect(key));
    }
    // A cached valid key is answered here, on the loop, complete: the caller continues inline
    // (Exchange.then), with no hop to a blocking thread and back (issue 9 item 2). A miss, or a
    // key cached as wrong, takes the lookup on the blocking pool.
    Optional<ApiKeyPrincipal> cached = keys.cachedPrincipal(key);
    if (cached.isPresent()) {
      return CompletableFuture.completedFuture(cached.get());
    }
    try {
      return CompletableFuture.supplyAsync(() -> lookup(key, from), blocking);
    } catch (RejectedExecutionException e) {
      throw overloaded();
    }
  }

  private CompletableFuture<ApiKeyPrincipal> authenticate(HttpRequest request, SocketAddress from) {
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
    return lookupAsync(key, from);
  }

  private ApiKeyPrincipal lookup(String key, SocketAddress from) {
    Optional<ApiKeyPrincipal> principal;
    try {
      principal = keys.authenticate(key);
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
    if (principal.isEmpty()) {
      throttle.recordFailure(from);
      throw incorrect(key);
    }
    return principal.get();
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
