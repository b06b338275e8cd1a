package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.netty.handler.codec.http.DefaultFullHttpRequest;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.HttpVersion;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.util.HashSet;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** The session store alone, on a clock the test moves: expiry, the cap, the cookie rules. */
class ConsoleSessionsTest {
  /** A clock that moves only when told. */
  static final class MovingClock extends Clock {
    private Instant now = Instant.parse("2026-11-30T12:00:00Z");

    void advance(Duration d) {
      now = now.plus(d);
    }

    @Override
    public Instant instant() {
      return now;
    }

    @Override
    public java.time.ZoneId getZone() {
      return ZoneOffset.UTC;
    }

    @Override
    public Clock withZone(java.time.ZoneId zone) {
      return this;
    }
  }

  private static HttpRequest withCookie(String cookie) {
    HttpRequest r = new DefaultFullHttpRequest(HttpVersion.HTTP_1_1, HttpMethod.GET, "/v1/usage");
    if (cookie != null) {
      r.headers().set("cookie", cookie);
    }
    return r;
  }

  @Test
  void aSessionExpiresAtItsTtlAndIsDropped() {
    MovingClock clock = new MovingClock();
    ConsoleSessions sessions = new ConsoleSessions(clock, Duration.ofMinutes(10));
    ConsoleSessions.Session s = sessions.create(ConsoleSessions.Kind.KEY, "gm_key");
    String cookie = "other=1; " + ConsoleSessions.COOKIE + "=" + s.id();
    assertThat(sessions.resolve(withCookie(cookie)).session()).isEqualTo(s);
    clock.advance(Duration.ofMinutes(10).minusNanos(1));
    assertThat(sessions.resolve(withCookie(cookie)).session()).isEqualTo(s);
    clock.advance(Duration.ofNanos(1));
    ConsoleSessions.Lookup expired = sessions.resolve(withCookie(cookie));
    assertThat(expired.cookieSent()).isTrue();
    assertThat(expired.session()).isNull();
    assertThat(sessions.size()).isZero();
  }

  @Test
  void noCookieOrAnAuthorizationHeaderIsNoSession() {
    ConsoleSessions sessions = new ConsoleSessions(new MovingClock(), Duration.ofHours(1));
    ConsoleSessions.Session s = sessions.create(ConsoleSessions.Kind.OPERATOR, null);
    assertThat(sessions.resolve(withCookie(null))).isEqualTo(ConsoleSessions.Lookup.NONE);
    assertThat(sessions.resolve(withCookie("gpumeter_session=")))
        .isEqualTo(ConsoleSessions.Lookup.NONE);
    HttpRequest both = withCookie(ConsoleSessions.COOKIE + "=" + s.id());
    both.headers().set("authorization", "Bearer x");
    assertThat(sessions.resolve(both)).isEqualTo(ConsoleSessions.Lookup.NONE);
    assertThat(sessions.resolve(withCookie(ConsoleSessions.COOKIE + "=nope")))
        .isEqualTo(ConsoleSessions.Lookup.UNKNOWN);
  }

  @Test
  void idsAndTokensAreRandomAndTheCsrfCheckIsExact() {
    ConsoleSessions sessions = new ConsoleSessions(new MovingClock(), Duration.ofHours(1));
    Set<String> seen = new HashSet<>();
    for (int i = 0; i < 1000; i++) {
      ConsoleSessions.Session s = sessions.create(ConsoleSessions.Kind.KEY, "k");
      assertThat(seen.add(s.id())).isTrue();
      assertThat(seen.add(s.csrfToken())).isTrue();
      assertThat(s.id()).matches("[A-Za-z0-9_-]{43}");
    }
    ConsoleSessions.Session s = sessions.create(ConsoleSessions.Kind.KEY, "gm_secret");
    assertThat(s.csrfMatches(s.csrfToken())).isTrue();
    assertThat(s.csrfMatches(null)).isFalse();
    assertThat(s.csrfMatches("")).isFalse();
    assertThat(s.csrfMatches(s.csrfToken() + "x")).isFalse();
    assertThat(s.csrfMatches(s.csrfToken().substring(1))).isFalse();
    assertThat(s.toString()).doesNotContain(s.id(), s.csrfToken(), "gm_secret");
  }

  @Test
  void pastTheCapExpiredSessionsMakeRoomElseTheSignInIsRefused() {
    MovingClock clock = new MovingClock();
    ConsoleSessions sessions = new ConsoleSessions(clock, Duration.ofMinutes(1));
    for (int i = 0; i < ConsoleSessions.MAX_SESSIONS; i++) {
      sessions.create(ConsoleSessions.Kind.OPERATOR, null);
    }
    assertThatThrownBy(() -> sessions.create(ConsoleSessions.Kind.OPERATOR, null))
        .isInstanceOfSatisfying(
            ApiException.class, e -> assertThat(e.code()).isEqualTo("too_many_sessions"));
    clock.advance(Duration.ofMinutes(1));
    sessions.create(ConsoleSessions.Kind.OPERATOR, null);
    assertThat(sessions.size()).isEqualTo(1);
    assertThatThrownBy(() -> new ConsoleSessions(clock, Duration.ZERO))
        .isInstanceOf(IllegalArgumentException.class);
  }
}
