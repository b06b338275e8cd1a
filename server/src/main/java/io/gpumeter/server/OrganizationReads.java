package io.gpumeter.server;

import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.KeyScope;
import io.gpumeter.billing.ShippingLagException;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What the customer read endpoints under {@code /v1/organization} and {@code /v1/usage} share: the
 * key scope rule (DESIGN.md invariant 9: an {@code inference} key reads only itself, an {@code
 * account_admin} key its whole account, nobody another account), running a ledger read on the
 * blocking executor, and the errors for an unknown parameter or an unreachable database.
 */
final class OrganizationReads {
  private static final Logger log = LoggerFactory.getLogger(OrganizationReads.class);

  static final String INSUFFICIENT_SCOPE = "insufficient_scope";

  private OrganizationReads() {}

  /** The one key a read is limited to: the caller's own for an inference key, else null (all). */
  static Long onlyKey(ApiKeyPrincipal principal) {
    return principal.scope() == KeyScope.INFERENCE ? principal.keyId() : null;
  }

  /**
   * @throws ApiException 403 {@value #INSUFFICIENT_SCOPE} unless the caller is an {@code
   *     account_admin} key; {@code what} names what it asked for ("the balance")
   */
  static void requireAccountAdmin(ApiKeyPrincipal principal, String what) {
    if (principal.scope() != KeyScope.ACCOUNT_ADMIN) {
      throw new ApiException(
          HttpResponseStatus.FORBIDDEN,
          ApiException.INVALID_REQUEST,
          "This key (scope "
              + principal.scope().dbName()
              + ") may not read "
              + what
              + " of its account; use an account_admin key.",
          null,
          INSUFFICIENT_SCOPE);
    }
  }

  /**
   * @throws ApiException 400 naming the first query parameter not in {@code known}
   */
  static void onlyParameters(Exchange ex, Set<String> known) {
    for (String name : ex.queryNames()) {
      if (!known.contains(name)) {
        throw ApiException.invalid(name, "Unrecognized request argument supplied: " + name);
      }
    }
  }

  /**
   * Runs {@code read} on the blocking executor. The future fails with the {@link ApiException} the
   * read threw, or with a 503 {@code billing_unavailable} (with {@code Retry-After}) for anything
   * else; {@code what} names the data in that message ("Usage").
   *
   * @throws ApiException 503 {@code overloaded} at once when the executor refuses the task
   */
  static <T> CompletableFuture<T> read(Executor blocking, String what, Supplier<T> read) {
    CompletableFuture<T> f;
    try {
      f = CompletableFuture.supplyAsync(read, blocking);
    } catch (RejectedExecutionException e) {
      throw Authenticator.overloaded();
    }
    return f.exceptionally(
        e -> {
          Throwable cause = Exchange.unwrap(e);
          if (cause instanceof ApiException api) {
            throw api;
          }
          if (!(cause instanceof ShippingLagException)) {
            log.warn("{} could not be read", what, cause);
          }
          throw unavailable(what, cause);
        });
  }

  /**
   * 503 with Retry-After for a read that failed with {@code failure}: the shipping lag's own
   * message when charges acknowledged before the read still wait in the local commit log
   * (read-your-writes: never a short answer), else {@link #unavailable(String)}.
   */
  static ApiException unavailable(String what, Throwable failure) {
    if (Exchange.unwrap(failure) instanceof ShippingLagException lag) {
      return new ApiException(
              HttpResponseStatus.SERVICE_UNAVAILABLE,
              ApiException.SERVER,
              what + " cannot be read yet: " + lag.getMessage(),
              null,
              CompletionsEndpoint.BILLING_UNAVAILABLE)
          .withHeader(HttpHeaderNames.RETRY_AFTER, CompletionsEndpoint.RETRY_AFTER_SECONDS);
    }
    return unavailable(what);
  }

  /** 503: the billing database cannot answer a read now. */
  static ApiException unavailable(String what) {
    return new ApiException(
            HttpResponseStatus.SERVICE_UNAVAILABLE,
            ApiException.SERVER,
            what + " cannot be read right now (the billing database is unavailable); retry later.",
            null,
            CompletionsEndpoint.BILLING_UNAVAILABLE)
        .withHeader(HttpHeaderNames.RETRY_AFTER, CompletionsEndpoint.RETRY_AFTER_SECONDS);
  }
}
