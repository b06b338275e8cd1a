package io.gpumeter.server;

import com.github.benmanes.caffeine.cache.AsyncLoadingCache;
import com.github.benmanes.caffeine.cache.Caffeine;
import com.github.benmanes.caffeine.cache.Ticker;
import io.gpumeter.billing.Balance;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;
import java.util.function.LongFunction;

/**
 * Each account's balance (prepaid credit left, plan allowance of the month and its use, currency),
 * cached so that a completion's receipt and its {@code x-ratelimit-*} headers cost no database
 * round trip (server/README.md, "Receipts").
 *
 * <p>Staleness: an entry older than {@code ttl} is reloaded in the background on its next read,
 * which still gets the old one (Caffeine's refresh-after-write); an entry older than {@code 10 x
 * ttl} is not served (the read waits for a load). So the figures a response shows are at most
 * {@code ttl} old on a busy account plus the load time, at most {@code 10 x ttl} on an idle one,
 * and never include the request itself (its charge is stored after the figures were read).
 *
 * <p>Threads: loads run on the blocking pool; {@link #get} never blocks the caller. A failed load
 * (database down) yields empty and is retried at the next read.
 */
final class BalanceCache {
  private final AsyncLoadingCache<Long, Balance> cache;

  /**
   * @param load reads an account's balance (blocking; {@code Accounting.balance(long)})
   */
  BalanceCache(LongFunction<Balance> load, Executor blocking, Duration ttl, Ticker ticker) {
    this.cache =
        Caffeine.newBuilder()
            .executor(blocking)
            .ticker(ticker)
            .maximumSize(100_000)
            .refreshAfterWrite(ttl)
            .expireAfterWrite(ttl.multipliedBy(10))
            .buildAsync(id -> load.apply(id));
  }

  /**
   * The account's balance as cached (loaded first when absent); empty when it cannot be read within
   * {@link #LOAD_WAIT}.
   */
  CompletableFuture<Optional<Balance>> get(long accountId) {
    CompletableFuture<Balance> f;
    try {
      f = cache.get(accountId);
    } catch (RuntimeException e) { // the blocking pool refused the load
      return CompletableFuture.completedFuture(Optional.empty());
    }
    return f.handle((b, e) -> Optional.ofNullable(b))
        .completeOnTimeout(Optional.empty(), LOAD_WAIT.toMillis(), TimeUnit.MILLISECONDS);
  }

  /**
   * Longest wait of an answer for a balance being loaded (the database may be down while the outbox
   * takes charges): after it the answer goes out without the figures.
   */
  static final Duration LOAD_WAIT = Duration.ofSeconds(2);

  /** The cached balance if it is loaded now, without waiting (and without loading it). */
  Optional<Balance> cached(long accountId) {
    CompletableFuture<Balance> f = cache.getIfPresent(accountId);
    if (f == null || !f.isDone() || f.isCompletedExceptionally()) {
      return Optional.empty();
    }
    return Optional.ofNullable(f.join());
  }

  /** Every cached balance that is loaded now (for the metrics' gauges). */
  List<Balance> loaded() {
    List<Balance> out = new ArrayList<>();
    for (CompletableFuture<Balance> f : cache.asMap().values()) {
      if (f.isDone() && !f.isCompletedExceptionally()) {
        out.add(f.join());
      }
    }
    return out;
  }
}
