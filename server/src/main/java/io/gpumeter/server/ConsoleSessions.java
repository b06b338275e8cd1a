package io.gpumeter.server;

import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.cookie.Cookie;
import io.netty.handler.codec.http.cookie.ServerCookieDecoder;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.util.Base64;
import java.util.Iterator;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The web console's sign-in sessions, held in this server's memory.
 *
 * <p>Sessions: a sign-in ({@code POST /console/session}) makes a session with a random id (256 bits
 * from {@link SecureRandom}, base64url) and a random CSRF token (the same size). The id goes to the
 * browser only as the {@value #COOKIE} cookie ({@code HttpOnly; SameSite=Strict; Path=/}); the CSRF
 * token only in the sign-in answer's body, which the page keeps in memory. A key session keeps the
 * API key itself here, on the server, never in the browser: every request it authenticates looks
 * the key up again through the same cached path as {@code Authorization: Bearer} ({@link
 * Authenticator}), so a revoked key stops working for its console session exactly as fast as for
 * its bearer requests (invariant 14). An operator session keeps no secret, only its kind.
 *
 * <p>Expiry: a session lives {@code console.session_ttl} from its sign-in (no sliding renewal), and
 * at most {@value #MAX_SESSIONS} live at once: a sign-in past that first drops the expired ones,
 * then is refused (503). Sessions are not shared between replicas and do not survive a restart (the
 * console signs in again). Thread-safe: one concurrent map.
 */
final class ConsoleSessions {
  /** Name of the session cookie. */
  static final String COOKIE = "gpumeter_session";

  /** Most sessions held at once. */
  static final int MAX_SESSIONS = 10_000;

  private static final int RANDOM_BYTES = 32;

  /** What a session was signed in with. */
  enum Kind {
    /** An API key: the customer endpoints, in the key's scope. */
    KEY,
    /** The admin token: the {@code /admin/} endpoints. */
    OPERATOR;

    String wire() {
      return this == KEY ? "key" : "operator";
    }
  }

  /**
   * One signed-in browser.
   *
   * @param apiKey the key a {@link Kind#KEY} session authenticates with; null for an operator
   */
  record Session(String id, Kind kind, String apiKey, String csrfToken, Instant expiresAt) {
    /** Whether {@code presented} is this session's CSRF token (constant time). */
    boolean csrfMatches(String presented) {
      return presented != null
          && MessageDigest.isEqual(
              csrfToken.getBytes(StandardCharsets.US_ASCII),
              presented.getBytes(StandardCharsets.US_ASCII));
    }

    @Override
    public String toString() {
      // never the id, the token or the key
      return "Session[" + kind.wire() + ", expires " + expiresAt + "]";
    }
  }

  /** What a request's cookie resolved to. */
  record Lookup(boolean cookieSent, Session session) {
    static final Lookup NONE = new Lookup(false, null);
    static final Lookup UNKNOWN = new Lookup(true, null);
  }

  private final Map<String, Session> sessions = new ConcurrentHashMap<>();
  private final SecureRandom random = new SecureRandom();
  private final Clock clock;
  private final Duration ttl;

  ConsoleSessions(Clock clock, Duration ttl) {
    if (ttl.isNegative() || ttl.isZero()) {
      throw new IllegalArgumentException("console session ttl must be positive, got " + ttl);
    }
    this.clock = clock;
    this.ttl = ttl;
  }

  Duration ttl() {
    return ttl;
  }

  /**
   * Starts a session.
   *
   * @throws ApiException 503 when {@value #MAX_SESSIONS} unexpired sessions exist
   */
  Session create(Kind kind, String apiKey) {
    if (sessions.size() >= MAX_SESSIONS) {
      dropExpired();
      if (sessions.size() >= MAX_SESSIONS) {
        throw new ApiException(
            io.netty.handler.codec.http.HttpResponseStatus.SERVICE_UNAVAILABLE,
            ApiException.SERVER,
            "Too many console sessions are open on this server; retry later.",
            null,
            "too_many_sessions");
      }
    }
    Session s = new Session(randomToken(), kind, apiKey, randomToken(), clock.instant().plus(ttl));
    sessions.put(s.id(), s);
    return s;
  }

  /** Ends the session with this id, if any. */
  void remove(String id) {
    sessions.remove(id);
  }

  /**
   * The session named by the request's {@value #COOKIE} cookie. A request with an {@code
   * Authorization} header ignores the cookie ({@link Lookup#NONE}); an unknown or expired id is
   * {@link Lookup#UNKNOWN} (and an expired one is dropped).
   */
  Lookup resolve(HttpRequest request) {
    if (request.headers().contains(HttpHeaderNames.AUTHORIZATION)) {
      return Lookup.NONE;
    }
    String id = cookieValue(request);
    if (id == null) {
      return Lookup.NONE;
    }
    Session s = sessions.get(id);
    if (s == null) {
      return Lookup.UNKNOWN;
    }
    if (!clock.instant().isBefore(s.expiresAt())) {
      sessions.remove(id, s);
      return Lookup.UNKNOWN;
    }
    return new Lookup(true, s);
  }

  /** Sessions held now (expired ones included until they are dropped). */
  int size() {
    return sessions.size();
  }

  void dropExpired() {
    Instant now = clock.instant();
    for (Iterator<Session> it = sessions.values().iterator(); it.hasNext(); ) {
      if (!now.isBefore(it.next().expiresAt())) {
        it.remove();
      }
    }
  }

  /** The first {@value #COOKIE} cookie of the request, or null. */
  static String cookieValue(HttpRequest request) {
    for (String header : request.headers().getAll(HttpHeaderNames.COOKIE)) {
      for (Cookie c : ServerCookieDecoder.LAX.decode(header)) {
        if (COOKIE.equals(c.name()) && !c.value().isEmpty()) {
          return c.value();
        }
      }
    }
    return null;
  }

  private String randomToken() {
    byte[] b = new byte[RANDOM_BYTES];
    random.nextBytes(b);
    return Base64.getUrlEncoder().withoutPadding().encodeToString(b);
  }
}
