package io.gpumeter.billing;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.db.InvalidationListener;
import io.gpumeter.billing.keys.ApiKeys;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.time.Clock;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Two {@link Billing} instances (two replicas) on one PostgreSQL: replica A owns the embedded
 * database, replica B reaches it as an external database with its own outbox. A key revoked
 * anywhere stops authenticating on the other replica within 1 s although both cache keys for 60 s
 * (LISTEN/NOTIFY, migration V11); a notification missed while a replica was not listening is made
 * up for by dropping its cache when it listens again; partition maintenance runs on one replica at
 * a time (a PostgreSQL advisory lock).
 */
@Timeout(value = 3, unit = TimeUnit.MINUTES)
class MultiReplicaTest {
  /** Long enough that only an invalidation, never the TTL, can explain a refusal in these tests. */
  private static final ApiKeyCacheConfig LONG_CACHE =
      new ApiKeyCacheConfig(10_000, Duration.ofSeconds(60), Duration.ofSeconds(60));

  private static final long MAINTENANCE_LOCK = 0x67706D74L;

  @TempDir static Path tmp;
  static Database db;
  static Billing a;
  static Billing b;
  static String ownerUrl;

  @BeforeAll
  static void start() throws Exception {
    Path pg = tmp.resolve("pg");
    db = Database.start(TestSupport.embedded(pg));
    a = Billing.open(db, config(tmp.resolve("outbox-a")));
    ownerUrl = db.jdbcUrl();
    String password = TestSupport.ownerPassword(pg);
    b =
        Billing.start(
            DatabaseConfig.builder()
                .jdbcUrl(ownerUrl)
                .user("postgres")
                .password(password)
                .maximumPoolSize(4)
                .build(),
            config(tmp.resolve("outbox-b")));
    ownerUrl =
        ownerUrl + (ownerUrl.contains("?") ? "&" : "?") + "user=postgres&password=" + password;
    await("both replicas listen")
        .atMost(Duration.ofSeconds(30))
        .until(() -> a.invalidations().listening() && b.invalidations().listening());
  }

  private static BillingConfig config(Path outbox) {
    return new BillingConfig(
        LedgerConfig.custom().outboxDirectory(outbox).build(),
        RetentionConfig.defaults().withInterval(Duration.ofDays(1)),
        Duration.ofSeconds(1),
        Clock.systemUTC(),
        LONG_CACHE);
  }

  @AfterAll
  static void stop() {
    if (b != null) {
      b.close();
    }
    if (a != null) {
      a.close();
    }
    if (db != null) {
      db.close();
    }
  }

  @Test
  void aRevocationOnOneReplicaIsRefusedByTheOtherWithinOneSecond() {
    CreatedApiKey key = a.apiKeys().create("replicas");
    assertThat(a.apiKeys().authenticate(key.plaintext())).isPresent();
    assertThat(b.apiKeys().authenticate(key.plaintext())).isPresent(); // now cached on B for 60 s
    long lookups = b.apiKeys().databaseLookups();
    assertThat(b.apiKeys().authenticate(key.plaintext())).isPresent();
    assertThat(b.apiKeys().databaseLookups()).as("served from B's cache").isEqualTo(lookups);

    long t0 = System.nanoTime();
    a.apiKeys().revoke(key.keyId());
    await("B refuses the key revoked on A")
        .atMost(Duration.ofSeconds(1))
        .pollInterval(Duration.ofMillis(10))
        .until(() -> b.apiKeys().authenticate(key.plaintext()).isEmpty());
    assertThat(Duration.ofNanos(System.nanoTime() - t0)).isLessThan(Duration.ofSeconds(1));
  }

  @Test
  void aRevocationFromTheCommandLineReachesBothReplicas() {
    // `key revoke` opens only the database (BillingAdmin): a plain ApiKeys on its own pool.
    CreatedApiKey key = a.apiKeys().create("cli");
    assertThat(a.apiKeys().authenticate(key.plaintext())).isPresent();
    assertThat(b.apiKeys().authenticate(key.plaintext())).isPresent();
    new ApiKeys(db.dataSource()).revoke(key.keyId());
    await("both replicas refuse it")
        .atMost(Duration.ofSeconds(1))
        .pollInterval(Duration.ofMillis(10))
        .until(
            () ->
                a.apiKeys().authenticate(key.plaintext()).isEmpty()
                    && b.apiKeys().authenticate(key.plaintext()).isEmpty());
  }

  @Test
  void aNotificationMissedWhileNotListeningIsMadeUpWhenListeningResumes() throws Exception {
    CreatedApiKey key = a.apiKeys().create("gap");
    assertThat(b.apiKeys().authenticate(key.plaintext())).isPresent();
    long listensBefore = b.invalidations().listens();
    try (Connection c = DriverManager.getConnection(ownerUrl)) {
      // Cut every listening session (A's and B's), and wait until they are gone.
      List<Integer> killed = new ArrayList<>();
      try (PreparedStatement ps =
          c.prepareStatement(
              "SELECT pid, pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                  + " WHERE application_name = ?")) {
        ps.setString(1, InvalidationListener.APPLICATION_NAME);
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            assertThat(rs.getBoolean(2)).isTrue();
            killed.add(rs.getInt(1));
          }
        }
      }
      assertThat(killed).hasSize(2);
      // Revoked while nobody listens: this notification reaches no one.
      try (Statement st = c.createStatement()) {
        st.executeUpdate("UPDATE api_keys SET revoked_at = now() WHERE id = " + key.keyId());
      }
    }
    // B's cache still holds the key for 60 s; listening again drops it.
    await("B listens again and refuses the key")
        .atMost(Duration.ofSeconds(10))
        .pollInterval(Duration.ofMillis(20))
        .until(
            () ->
                b.invalidations().listens() > listensBefore
                    && b.invalidations().listening()
                    && b.apiKeys().authenticate(key.plaintext()).isEmpty());
  }

  @Test
  void partitionMaintenanceRunsOnOneReplicaAtATime() throws Exception {
    // A replica in the middle of a run holds the lock: every other replica skips.
    try (Connection holder = DriverManager.getConnection(ownerUrl);
        Statement st = holder.createStatement()) {
      st.execute("SELECT pg_advisory_lock(" + MAINTENANCE_LOCK + ")");
      assertThat(a.maintenance().run().skipped()).isTrue();
      assertThat(b.maintenance().run().skipped()).isTrue();
      st.execute("SELECT pg_advisory_unlock(" + MAINTENANCE_LOCK + ")");
    }
    assertThat(b.maintenance().run().skipped()).isFalse();

    // Both replicas start together, 20 times: never an error (two runs at once would race on
    // the same DDL), and each round at least one ran.
    ExecutorService pool = Executors.newFixedThreadPool(2);
    try {
      for (int round = 0; round < 20; round++) {
        CyclicBarrier barrier = new CyclicBarrier(2);
        List<Future<MaintenanceReport>> runs = new ArrayList<>();
        for (Billing replica : List.of(a, b)) {
          runs.add(
              pool.submit(
                  () -> {
                    barrier.await(10, TimeUnit.SECONDS);
                    return replica.maintenance().run();
                  }));
        }
        int ran = 0;
        for (Future<MaintenanceReport> f : runs) {
          if (!f.get(60, TimeUnit.SECONDS).skipped()) {
            ran++;
          }
        }
        assertThat(ran).as("round " + round).isBetween(1, 2);
      }
    } finally {
      pool.shutdownNow();
    }
  }
}
