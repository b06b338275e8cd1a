package io.gpumeter.billing.idempotency;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.IdempotencyClaim;
import io.gpumeter.billing.IdempotencyClaim.Outcome;
import io.gpumeter.billing.IdempotencyKeys;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneId;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The idempotency_keys table (V9) through {@link JdbcIdempotencyKeys}, on a real PostgreSQL. */
class IdempotencyKeysTest {
  @TempDir static Path tmp;
  static Database db;

  static final Duration LEASE = Duration.ofMinutes(7);

  @BeforeAll
  static void start() {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
  }

  @AfterAll
  static void stop() {
    db.close();
  }

  /** A clock that tests move by hand. */
  static final class MovableClock extends Clock {
    private volatile Instant now;

    MovableClock(Instant start) {
      this.now = start;
    }

    void advance(Duration d) {
      now = now.plus(d);
    }

    @Override
    public ZoneId getZone() {
      return ZoneOffset.UTC;
    }

    @Override
    public Clock withZone(ZoneId zone) {
      return this;
    }

    @Override
    public Instant instant() {
      return now;
    }
  }

  static byte[] hash(String s) throws Exception {
    return java.security.MessageDigest.getInstance("SHA-256")
        .digest(s.getBytes(StandardCharsets.UTF_8));
  }

  static byte[] body(String s) {
    return s.getBytes(StandardCharsets.UTF_8);
  }

  @Test
  void aKeyIsClaimedOnceAnsweredThenReplayedAndRefusedForAnotherBody() throws Exception {
    IdempotencyKeys keys = new JdbcIdempotencyKeys(db.dataSource(), Clock.systemUTC());
    byte[] h = hash("a");
    assertThat(keys.claim(1, "k-1", h, "req-1", LEASE).outcome()).isEqualTo(Outcome.CLAIMED);

    IdempotencyClaim again = keys.claim(1, "k-1", h, "req-2", LEASE);
    assertThat(again.outcome()).isEqualTo(Outcome.IN_FLIGHT);
    assertThat(again.requestId()).isEqualTo("req-1");
    assertThat(keys.claim(1, "k-1", hash("b"), "req-3", LEASE))
        .extracting(IdempotencyClaim::outcome, IdempotencyClaim::requestId)
        .containsExactly(Outcome.MISMATCH, "req-1");
    // Another API key has its own namespace.
    assertThat(keys.claim(2, "k-1", hash("b"), "req-4", LEASE).outcome())
        .isEqualTo(Outcome.CLAIMED);

    assertThat(keys.complete(1, "k-1", "req-2", 200, body("{\"wrong\":1}")))
        .as("only the holder stores")
        .isFalse();
    assertThat(keys.complete(1, "k-1", "req-1", 200, body("{\"id\":\"req-1\"}"))).isTrue();
    IdempotencyClaim replay = keys.claim(1, "k-1", h, "req-5", LEASE);
    assertThat(replay.outcome()).isEqualTo(Outcome.REPLAY);
    assertThat(replay.requestId()).isEqualTo("req-1");
    assertThat(replay.status()).isEqualTo(200);
    assertThat(new String(replay.body(), StandardCharsets.UTF_8)).isEqualTo("{\"id\":\"req-1\"}");
    keys.release(1, "k-1", "req-1"); // answered: a release does nothing
    assertThat(keys.claim(1, "k-1", h, "req-6", LEASE).outcome()).isEqualTo(Outcome.REPLAY);
    assertThat(keys.claim(1, "k-1", hash("b"), "req-7", LEASE).outcome())
        .isEqualTo(Outcome.MISMATCH);
  }

  @Test
  void aReleasedKeyRunsAgainAndOnlyItsHolderReleasesIt() throws Exception {
    IdempotencyKeys keys = new JdbcIdempotencyKeys(db.dataSource(), Clock.systemUTC());
    byte[] h = hash("r");
    assertThat(keys.claim(3, "rel", h, "r-1", LEASE).outcome()).isEqualTo(Outcome.CLAIMED);
    keys.release(3, "rel", "r-other");
    assertThat(keys.claim(3, "rel", h, "r-2", LEASE).outcome()).isEqualTo(Outcome.IN_FLIGHT);
    keys.release(3, "rel", "r-1");
    assertThat(keys.claim(3, "rel", h, "r-2", LEASE).outcome()).isEqualTo(Outcome.CLAIMED);
  }

  @Test
  void ofConcurrentFirstAttemptsExactlyOneWinsTheKey() throws Exception {
    IdempotencyKeys keys = new JdbcIdempotencyKeys(db.dataSource(), Clock.systemUTC());
    byte[] h = hash("race");
    int n = 6;
    ExecutorService pool = Executors.newFixedThreadPool(n);
    try {
      CountDownLatch go = new CountDownLatch(1);
      List<Future<IdempotencyClaim>> claims = new ArrayList<>();
      for (int i = 0; i < n; i++) {
        String id = "race-" + i;
        claims.add(
            pool.submit(
                () -> {
                  go.await();
                  return keys.claim(4, "race", h, id, LEASE);
                }));
      }
      go.countDown();
      int won = 0;
      for (Future<IdempotencyClaim> f : claims) {
        IdempotencyClaim c = f.get(60, TimeUnit.SECONDS);
        if (c.outcome() == Outcome.CLAIMED) {
          won++;
        } else {
          assertThat(c.outcome()).isEqualTo(Outcome.IN_FLIGHT);
        }
      }
      assertThat(won).isEqualTo(1);
    } finally {
      pool.shutdownNow();
    }
  }

  @Test
  void aClaimWhoseLeaseRanOutIsTakenOverAndItsChargeVoided() throws Exception {
    MovableClock clock = new MovableClock(Instant.parse("2026-11-30T12:00:00Z"));
    IdempotencyKeys keys = new JdbcIdempotencyKeys(db.dataSource(), clock);
    byte[] h = hash("crash");
    assertThat(keys.claim(5, "crash", h, "dead-1", LEASE).outcome()).isEqualTo(Outcome.CLAIMED);
    clock.advance(LEASE.minusSeconds(1));
    assertThat(keys.claim(5, "crash", h, "retry-1", LEASE).outcome()).isEqualTo(Outcome.IN_FLIGHT);
    assertThat(voidReason("dead-1")).isNull();

    clock.advance(Duration.ofSeconds(2)); // the lease has run out: the holder is gone
    IdempotencyClaim taken = keys.claim(5, "crash", h, "retry-2", LEASE);
    assertThat(taken.outcome()).isEqualTo(Outcome.CLAIMED);
    assertThat(taken.supersededRequestId()).isEqualTo("dead-1");
    assertThat(voidReason("dead-1")).isEqualTo("idempotent_retry");
    assertThat(keys.complete(5, "crash", "dead-1", 200, body("{}")))
        .as("the superseded attempt cannot store its answer")
        .isFalse();
    assertThat(keys.complete(5, "crash", "retry-2", 200, body("{\"id\":\"retry-2\"}"))).isTrue();
    assertThat(keys.claim(5, "crash", h, "retry-3", LEASE).requestId()).isEqualTo("retry-2");
  }

  @Test
  void aKeyOlderThanADayCountsAsAbsent() throws Exception {
    MovableClock clock = new MovableClock(Instant.parse("2026-11-30T12:00:00Z"));
    IdempotencyKeys keys = new JdbcIdempotencyKeys(db.dataSource(), clock);
    assertThat(keys.claim(6, "old", hash("x"), "old-1", LEASE).outcome())
        .isEqualTo(Outcome.CLAIMED);
    assertThat(keys.complete(6, "old", "old-1", 200, body("{}"))).isTrue();
    clock.advance(IdempotencyKeys.RETENTION.minusSeconds(1));
    assertThat(keys.claim(6, "old", hash("y"), "old-2", LEASE).outcome())
        .isEqualTo(Outcome.MISMATCH);
    clock.advance(Duration.ofSeconds(1));
    assertThat(keys.claim(6, "old", hash("y"), "old-3", LEASE).outcome())
        .isEqualTo(Outcome.CLAIMED);
    assertThat(voidReason("old-1")).as("an answered request is never voided").isNull();
  }

  @Test
  void keysAreOneTo255PrintableAsciiCharacters() {
    assertThat(IdempotencyKeys.isValidKey("a")).isTrue();
    assertThat(IdempotencyKeys.isValidKey("x".repeat(255))).isTrue();
    assertThat(IdempotencyKeys.isValidKey(" ~!")).isTrue();
    assertThat(IdempotencyKeys.isValidKey("")).isFalse();
    assertThat(IdempotencyKeys.isValidKey(null)).isFalse();
    assertThat(IdempotencyKeys.isValidKey("x".repeat(256))).isFalse();
    assertThat(IdempotencyKeys.isValidKey("tab\there")).isFalse();
    assertThat(IdempotencyKeys.isValidKey("caf\u00e9")).isFalse();
    assertThat(IdempotencyKeys.isValidKey("del\u007f")).isFalse();
  }

  static String voidReason(String requestId) throws Exception {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT reason FROM charge_voids WHERE request_id = ?")) {
      ps.setString(1, requestId);
      try (ResultSet rs = ps.executeQuery()) {
        return rs.next() ? rs.getString(1) : null;
      }
    }
  }
}
