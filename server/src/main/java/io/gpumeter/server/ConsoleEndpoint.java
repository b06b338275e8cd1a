package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.billing.ApiKeyPrincipal;
import io.netty.buffer.Unpooled;
import io.netty.handler.codec.http.DefaultHttpHeaders;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaders;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.cookie.CookieHeaderNames;
import io.netty.handler.codec.http.cookie.DefaultCookie;
import io.netty.handler.codec.http.cookie.ServerCookieEncoder;
import io.netty.util.AsciiString;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Iterator;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Pattern;

/**
 * The web console under {@code /console}: its built files (from the jar's {@value #RESOURCE_ROOT}
 * resources, made by the Maven build from {@code server/src/main/console}) and its sign-in, {@code
 * POST|GET|DELETE /console/session}.
 *
 * <p>Files: {@code GET} only; {@code /console} redirects to {@code /console/}, which is {@code
 * index.html}. A path is served only when every segment is plain ({@value #SEGMENT}: no dot first,
 * so no {@code ..}, no hidden files) and ends in a known extension, so a directory is never listed
 * (it is a 404 like any missing file). Every answer under {@code /console} carries {@link #CSP}:
 * the page may load and connect to nothing but this server, and runs no inline script or style.
 * Files under {@code assets/} have content hashes in their names and are cached for a year; the
 * others are revalidated. Files are read once and kept in memory (the set is the build's, a few
 * files).
 *
 * <p>Sign-in: {@code POST /console/session} with {@code {"api_key": KEY}} or {@code {"admin_token":
 * TOKEN}}, {@code Content-Type: application/json} (so a plain cross-site form cannot sign a browser
 * in); checked and throttled exactly as the same credential in an {@code Authorization} header.
 * Answers 200 with the cookie ({@link ConsoleSessions}) and {@code
 * {"object":"console.session","kind":"key|operator","csrf_token",...}}. {@code GET
 * /console/session} answers the same body for the current session (so a reloaded page gets its CSRF
 * token back; a cross-site page cannot read it), re-checking a key session's key. {@code DELETE
 * /console/session} (CSRF token required, {@link Routes}) ends it and clears the cookie.
 */
final class ConsoleEndpoint {
  static final String PREFIX = "/console";
  static final String SESSION_PATH = "/console/session";
  static final String RESOURCE_ROOT = "console/";
  static final String SEGMENT = "[A-Za-z0-9_-][A-Za-z0-9._-]*";
  private static final Pattern FILE_PATH = Pattern.compile(SEGMENT + "(/" + SEGMENT + ")*");

  /** Nothing from outside this server, no inline script or style, no framing. */
  static final String CSP =
      "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
          + " font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none';"
          + " form-action 'self'; frame-ancestors 'none'";

  static final AsciiString CONTENT_SECURITY_POLICY = AsciiString.cached("content-security-policy");
  static final AsciiString CSRF_HEADER = AsciiString.cached("x-csrf-token");

  private static final Map<String, String> TYPES =
      Map.ofEntries(
          Map.entry("html", "text/html; charset=utf-8"),
          Map.entry("js", "text/javascript; charset=utf-8"),
          Map.entry("mjs", "text/javascript; charset=utf-8"),
          Map.entry("css", "text/css; charset=utf-8"),
          Map.entry("json", "application/json"),
          Map.entry("svg", "image/svg+xml"),
          Map.entry("png", "image/png"),
          Map.entry("ico", "image/x-icon"),
          Map.entry("woff2", "font/woff2"),
          Map.entry("txt", "text/plain; charset=utf-8"));

  private record StaticFile(byte[] bytes, String contentType, boolean immutable) {}

  private final ConsoleSessions sessions;
  private final Authenticator auth;
  private final AdminEndpoint admin;
  private final ClassLoader loader;
  private final Map<String, StaticFile> files = new ConcurrentHashMap<>();

  ConsoleEndpoint(ConsoleSessions sessions, Authenticator auth, AdminEndpoint admin) {
    this(sessions, auth, admin, ConsoleEndpoint.class.getClassLoader());
  }

  ConsoleEndpoint(
      ConsoleSessions sessions, Authenticator auth, AdminEndpoint admin, ClassLoader loader) {
    this.sessions = sessions;
    this.auth = auth;
    this.admin = admin;
    this.loader = loader;
  }

  void handle(Exchange ex) {
    String path = ex.path();
    if (path.equals(SESSION_PATH)) {
      session(ex);
      return;
    }
    Routes.allow(ex, HttpMethod.GET, "GET");
    if (path.equals(PREFIX)) {
      HttpHeaders h = securityHeaders();
      h.set(HttpHeaderNames.LOCATION, PREFIX + "/");
      ex.respond(
          HttpResponseStatus.PERMANENT_REDIRECT,
          Unpooled.EMPTY_BUFFER,
          "text/plain; charset=utf-8",
          h);
      return;
    }
    String relative = path.substring(PREFIX.length() + 1); // after "/console/"
    if (relative.isEmpty()) {
      relative = "index.html";
    }
    StaticFile file = file(relative).orElseThrow(() -> Routes.unknownUrl(ex));
    HttpHeaders h = securityHeaders();
    h.set(
        HttpHeaderNames.CACHE_CONTROL,
        file.immutable() ? "public, max-age=31536000, immutable" : "no-cache");
    ex.respond(HttpResponseStatus.OK, Unpooled.wrappedBuffer(file.bytes()), file.contentType(), h);
  }

  /** The built file at {@code relative} (under {@value #RESOURCE_ROOT}), or empty. */
  Optional<StaticFile> file(String relative) {
    if (!FILE_PATH.matcher(relative).matches()) {
      return Optional.empty();
    }
    int dot = relative.lastIndexOf('.');
    String type = dot < 0 ? null : TYPES.get(relative.substring(dot + 1).toLowerCase(Locale.ROOT));
    if (type == null) {
      return Optional.empty(); // also every directory: no listing
    }
    StaticFile cached = files.get(relative);
    if (cached != null) {
      return Optional.of(cached);
    }
    try (InputStream in = loader.getResourceAsStream(RESOURCE_ROOT + relative)) {
      if (in == null) {
        return Optional.empty();
      }
      StaticFile f = new StaticFile(in.readAllBytes(), type, relative.startsWith("assets/"));
      files.put(relative, f);
      return Optional.of(f);
    } catch (IOException e) {
      throw new UncheckedIOException("reading console file " + relative, e);
    }
  }

  /** Headers on every answer under {@code /console}. */
  static HttpHeaders securityHeaders() {
    HttpHeaders h = new DefaultHttpHeaders();
    h.set(CONTENT_SECURITY_POLICY, CSP);
    h.set("x-content-type-options", "nosniff");
    h.set(HttpHeaderNames.X_FRAME_OPTIONS, "DENY");
    h.set("referrer-policy", "no-referrer");
    return h;
  }

  private void session(Exchange ex) {
    HttpMethod method = ex.request().method();
    if (method.equals(HttpMethod.POST)) {
      signIn(ex);
    } else if (method.equals(HttpMethod.GET)) {
      current(ex);
    } else if (method.equals(HttpMethod.DELETE)) {
      signOut(ex);
    } else {
      Routes.allow(ex, HttpMethod.POST, "GET, POST, DELETE");
    }
  }

  private void signIn(Exchange ex) {
    String contentType = ex.request().headers().get(HttpHeaderNames.CONTENT_TYPE);
    if (contentType == null
        || !contentType.toLowerCase(Locale.ROOT).startsWith("application/json")) {
      throw new ApiException(
          HttpResponseStatus.UNSUPPORTED_MEDIA_TYPE,
          ApiException.INVALID_REQUEST,
          "Sign in with Content-Type: application/json and a body {\"api_key\": KEY} or"
              + " {\"admin_token\": TOKEN}.",
          null,
          "unsupported_media_type");
    }
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
          "The body must be a JSON object: {\"api_key\": KEY} or {\"admin_token\": TOKEN}.",
          null,
          "invalid_json");
    }
    for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
      String name = it.next();
      if (!name.equals("api_key") && !name.equals("admin_token")) {
        throw ApiException.invalid(
            name, "Unknown field '" + name + "'; send either api_key or admin_token.");
      }
    }
    JsonNode key = root.get("api_key");
    JsonNode token = root.get("admin_token");
    if ((key == null) == (token == null)) {
      throw ApiException.invalid(
          key == null ? "api_key" : "admin_token",
          "Send exactly one of api_key (a customer's key) and admin_token (the operator's).");
    }
    JsonNode given = key != null ? key : token;
    String field = key != null ? "api_key" : "admin_token";
    if (!given.isTextual() || given.asText().isBlank()) {
      throw ApiException.wrongType(field, "a non-empty string", given.getNodeType().toString());
    }
    String old = ConsoleSessions.cookieValue(ex.request());
    if (token != null) {
      admin.checkOperatorSignIn(ex, token.asText());
      startSession(ex, old, ConsoleSessions.Kind.OPERATOR, null, null);
      return;
    }
    String secret = key.asText().trim();
    ex.then(
        auth.authenticateKey(ex, secret),
        p -> startSession(ex, old, ConsoleSessions.Kind.KEY, secret, p));
  }

  private void startSession(
      Exchange ex,
      String oldId,
      ConsoleSessions.Kind kind,
      String apiKey,
      ApiKeyPrincipal principal) {
    if (oldId != null) {
      sessions.remove(oldId); // a new sign-in replaces this browser's session
    }
    ConsoleSessions.Session s = sessions.create(kind, apiKey);
    HttpHeaders h = securityHeaders();
    h.set(HttpHeaderNames.SET_COOKIE, cookie(ex, s.id(), sessions.ttl().toSeconds()));
    h.set(HttpHeaderNames.CACHE_CONTROL, "no-store");
    ex.respond(
        HttpResponseStatus.OK,
        Json.write(ex.alloc(), g -> writeSession(g, s, principal)),
        Exchange.APPLICATION_JSON,
        h);
  }

  private void current(Exchange ex) {
    ConsoleSessions.Session s = ex.console().session();
    if (s == null) {
      throw new ApiException(
          HttpResponseStatus.UNAUTHORIZED,
          ApiException.INVALID_REQUEST,
          "Not signed in to the console (no session, or it expired).",
          null,
          "session_expired");
    }
    if (s.kind() == ConsoleSessions.Kind.OPERATOR) {
      answerCurrent(ex, s, null);
      return;
    }
    ex.then(auth.authenticate(ex), p -> answerCurrent(ex, s, p));
  }

  private void answerCurrent(Exchange ex, ConsoleSessions.Session s, ApiKeyPrincipal p) {
    HttpHeaders h = securityHeaders();
    h.set(HttpHeaderNames.CACHE_CONTROL, "no-store");
    ex.respond(
        HttpResponseStatus.OK,
        Json.write(ex.alloc(), g -> writeSession(g, s, p)),
        Exchange.APPLICATION_JSON,
        h);
  }

  private void signOut(Exchange ex) {
    ConsoleSessions.Session s = ex.console().session();
    if (s != null) {
      sessions.remove(s.id());
    }
    HttpHeaders h = securityHeaders();
    h.set(HttpHeaderNames.SET_COOKIE, cookie(ex, "", 0));
    h.set(HttpHeaderNames.CACHE_CONTROL, "no-store");
    ex.respond(
        HttpResponseStatus.OK,
        Json.write(
            ex.alloc(),
            g -> {
              g.writeStartObject();
              g.writeStringField("object", "console.session");
              g.writeBooleanField("signed_out", true);
              g.writeEndObject();
            }),
        Exchange.APPLICATION_JSON,
        h);
  }

  /**
   * {@code gpumeter_session=ID; Max-Age=...; Path=/; HttpOnly; SameSite=Strict}, plus {@code
   * Secure} when the request came through a proxy that says it was HTTPS ({@code
   * X-Forwarded-Proto}).
   */
  static String cookie(Exchange ex, String value, long maxAgeSeconds) {
    DefaultCookie c = new DefaultCookie(ConsoleSessions.COOKIE, value);
    c.setHttpOnly(true);
    c.setSameSite(CookieHeaderNames.SameSite.Strict);
    c.setPath("/");
    c.setMaxAge(maxAgeSeconds);
    c.setSecure("https".equalsIgnoreCase(ex.request().headers().get("x-forwarded-proto")));
    return ServerCookieEncoder.STRICT.encode(c);
  }

  private static void writeSession(
      com.fasterxml.jackson.core.JsonGenerator g, ConsoleSessions.Session s, ApiKeyPrincipal p)
      throws IOException {
    g.writeStartObject();
    g.writeStringField("object", "console.session");
    g.writeStringField("kind", s.kind().wire());
    g.writeStringField("csrf_token", s.csrfToken());
    g.writeNumberField("expires_at", s.expiresAt().getEpochSecond());
    if (p != null) {
      g.writeStringField("account", p.accountName());
      g.writeStringField("api_key_id", Long.toString(p.keyId()));
      g.writeStringField("key_prefix", p.keyPrefix());
      g.writeStringField("scope", p.scope().dbName());
    }
    g.writeEndObject();
  }
}
