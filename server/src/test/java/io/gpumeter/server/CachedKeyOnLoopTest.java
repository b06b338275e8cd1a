package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.keys.ApiKeys;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A key the cache holds as valid is answered on the calling thread (the event loop), complete, so
 * the request continues inline instead of hopping to a blocking thread and back (issue 9 item 2);
 * anything else still goes to the blocking pool. Real {@link ApiKeys} on an embedded PostgreSQL.
 */
class CachedKeyOnLoopTest {
  @TempDir static Path tmp;
  static Database db;
  static ExecutorService pool;

  @BeforeAll
  static void start() {
    db =
        Database.start(
            DatabaseConfig.builder()
                .dataDirectory(tmp.resolve("pg"))
                .binaryCacheDirectory(Path.of("target", "pg-binaries").toAbsolutePath())
                .maximumPoolSize(4)
                .build());
    pool = Executors.newFixedThreadPool(2);
  }

  @AfterAll
  static void stop() {
    pool.shutdownNow();
    db.close();
  }

  @Test
  void aCachedValidKeyIsAnsweredWithoutTheBlockingPool() throws Exception {
    ApiKeys keys = new ApiKeys(db.dataSource());
    AtomicInteger hops = new AtomicInteger();
    Authenticator auth =
        new Authenticator(
            keys,
            task -> {
              hops.incrementAndGet();
              pool.execute(task);
            },
            new AuthThrottle(100, Duration.ofMinutes(1)));
    InetSocketAddress from = new InetSocketAddress("127.0.0.1", 40000);
    CreatedApiKey k = keys.create("on-loop");

    // First use: a cache miss, looked up on the blocking pool.
    CompletableFuture<ApiKeyPrincipal> first = auth.lookupAsync(k.plaintext(), from);
    assertThat(first.get(30, TimeUnit.SECONDS).keyId()).isEqualTo(k.keyId());
    assertThat(hops).hasValue(1);

    // Then cached: complete at once, on this thread, no task for the pool.
    CompletableFuture<ApiKeyPrincipal> second = auth.lookupAsync(k.plaintext(), from);
    assertThat(second).isCompleted();
    assertThat(second.join().keyId()).isEqualTo(k.keyId());
    assertThat(hops).hasValue(1);

    // A revoked key is dropped from the cache: looked up again (and refused), never served cached.
    keys.revoke(k.keyId());
    CompletableFuture<ApiKeyPrincipal> revoked = auth.lookupAsync(k.plaintext(), from);
    assertThatThrownBy(() -> revoked.get(30, TimeUnit.SECONDS))
        .hasCauseInstanceOf(ApiException.class);
    assertThat(hops).hasValue(2);

    // A wrong key (even once cached as unknown) always takes the pool: the slow, throttled path.
    String wrong = "gm_" + "Q".repeat(40);
    for (int i = 0; i < 2; i++) {
      CompletableFuture<ApiKeyPrincipal> refused = auth.lookupAsync(wrong, from);
      assertThatThrownBy(refused::join)
          .isInstanceOf(CompletionException.class)
          .hasCauseInstanceOf(ApiException.class);
    }
    assertThat(hops).hasValue(4);
  }
}
