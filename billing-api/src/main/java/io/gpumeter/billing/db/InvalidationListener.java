package io.gpumeter.billing.db;

import java.sql.Connection;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;
import javax.sql.DataSource;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Listens on the PostgreSQL channel {@value #CHANNEL} and hands each notification to the handler of
 * its kind, so a change committed by any replica (or by the command line, or by hand in SQL) drops
 * the stale entries of every replica's caches within a poll interval.
 *
 * <p>Payloads are {@code <kind>:<value>}; triggers write them (migration V11: {@code
 * api_key:<sha-256 hex>} on every update or delete of an API key). Each kind has one handler for a
 * value and one for a <b>gap</b>: a time during which notifications may have been missed.
 *
 * <p>Concurrency: one daemon thread, {@code gpumeter-invalidations}, holds one connection of the
 * pool given, {@code LISTEN}s, and waits for notifications at most {@link #pollInterval} at a time;
 * handlers run on that thread and must be quick (a cache invalidation). Every {@link #pollInterval}
 * without a notification it checks the connection with a query, so a half-open connection is
 * noticed within two intervals.
 *
 * <p>Failure: when the connection breaks, the thread retries every {@link #retryInterval} until the
 * database answers; once {@code LISTEN} is back it runs every gap handler (the caches drop
 * everything they hold, since what changed meanwhile is unknown). While it is down nothing is
 * dropped: the caches keep serving what they hold, each entry for at most its own time to live,
 * which is therefore the staleness bound while notifications are down. The gap handlers also run at
 * the first {@code LISTEN}, for entries cached before it.
 */
public final class InvalidationListener implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(InvalidationListener.class);

  /** The channel the triggers notify. */
  public static final String CHANNEL = "gpumeter_invalidate";

  /** The listening session's {@code application_name}. */
  public static final String APPLICATION_NAME = "gpumeter-invalidations";

  private final DataSource dataSource;
  private final Duration pollInterval;
  private final Duration retryInterval;
  private final Map<String, Consumer<String>> handlers = new ConcurrentHashMap<>();
  private final List<Runnable> gapHandlers = new CopyOnWriteArrayList<>();
  private final CountDownLatch closing = new CountDownLatch(1);
  private final AtomicLong received = new AtomicLong();
  private final AtomicLong listens = new AtomicLong();
  private final Thread thread;
  private volatile boolean listening;

  private InvalidationListener(DataSource dataSource, Duration pollInterval, Duration retry) {
    this.dataSource = Objects.requireNonNull(dataSource, "dataSource");
    this.pollInterval = requirePositive(pollInterval, "pollInterval");
    this.retryInterval = requirePositive(retry, "retryInterval");
    this.thread = new Thread(this::run, "gpumeter-invalidations");
    thread.setDaemon(true);
  }

  /**
   * A listener on {@code dataSource} (it keeps one of its connections); {@link #start()} it after
   * subscribing.
   *
   * @param pollInterval the longest wait for a notification, and how often an idle connection is
   *     checked; a change reaches this process within about this long
   * @param retryInterval how often a broken connection is retried
   */
  public static InvalidationListener create(
      DataSource dataSource, Duration pollInterval, Duration retryInterval) {
    return new InvalidationListener(dataSource, pollInterval, retryInterval);
  }

  /**
   * Hands the values of notifications {@code kind:value} to {@code onValue}, and runs {@code onGap}
   * whenever notifications may have been missed.
   *
   * @throws IllegalStateException if {@code kind} already has a handler
   */
  public InvalidationListener subscribe(String kind, Consumer<String> onValue, Runnable onGap) {
    if (kind.isEmpty() || kind.indexOf(':') >= 0) {
      throw new IllegalArgumentException("kind must be non-empty without ':', got '" + kind + "'");
    }
    if (handlers.putIfAbsent(kind, Objects.requireNonNull(onValue, "onValue")) != null) {
      throw new IllegalStateException("kind '" + kind + "' already has a handler");
    }
    gapHandlers.add(Objects.requireNonNull(onGap, "onGap"));
    return this;
  }

  /** Starts listening (the first {@code LISTEN} happens on the listener's thread). */
  public InvalidationListener start() {
    thread.start();
    return this;
  }

  /** True while {@code LISTEN} is active on a connection that answered within the last checks. */
  public boolean listening() {
    return listening;
  }

  /** Notifications received since creation (for tests and metrics). */
  public long received() {
    return received.get();
  }

  /** How many times {@code LISTEN} was (re)established since creation. */
  public long listens() {
    return listens.get();
  }

  private void run() {
    boolean warned = false;
    while (closing.getCount() > 0) {
      try (Connection c = dataSource.getConnection()) {
        c.setAutoCommit(true);
        try (Statement st = c.createStatement()) {
          // Named, so an operator (and a test) can find this session in pg_stat_activity.
          st.execute("SET application_name = '" + APPLICATION_NAME + "'");
          st.execute("LISTEN " + CHANNEL);
        }
        PGConnection pg = c.unwrap(PGConnection.class);
        // Whatever changed before this LISTEN (or while the last connection was down) is unknown.
        gapHandlers.forEach(InvalidationListener::runQuietly);
        listening = true;
        listens.incrementAndGet();
        if (warned) {
          LOG.info("Cache invalidations: listening again on {}", CHANNEL);
          warned = false;
        }
        int timeout = (int) Math.min(Integer.MAX_VALUE, pollInterval.toMillis());
        while (closing.getCount() > 0) {
          PGNotification[] notes = pg.getNotifications(timeout);
          if (notes == null || notes.length == 0) {
            try (Statement st = c.createStatement()) {
              st.setQueryTimeout((int) Math.max(1, pollInterval.toSeconds() * 2));
              st.execute("SELECT 1");
            }
            continue;
          }
          for (PGNotification n : notes) {
            dispatch(n.getParameter());
          }
        }
      } catch (SQLException | RuntimeException e) {
        listening = false;
        if (closing.getCount() == 0) {
          return;
        }
        if (!warned) {
          LOG.warn(
              "Cache invalidations: not listening ({}); caches keep entries for their TTL until"
                  + " the database answers again",
              e.toString());
          warned = true;
        }
      }
      try {
        if (closing.await(retryInterval.toMillis(), TimeUnit.MILLISECONDS)) {
          return;
        }
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return;
      }
    }
  }

  private void dispatch(String payload) {
    received.incrementAndGet();
    int colon = payload.indexOf(':');
    Consumer<String> handler = colon > 0 ? handlers.get(payload.substring(0, colon)) : null;
    if (handler == null) {
      LOG.debug("Cache invalidations: no handler for '{}'", payload);
      return;
    }
    try {
      handler.accept(payload.substring(colon + 1));
    } catch (RuntimeException e) {
      LOG.error("Cache invalidation '{}' failed", payload, e);
    }
  }

  private static void runQuietly(Runnable r) {
    try {
      r.run();
    } catch (RuntimeException e) {
      LOG.error("Cache invalidation after a gap failed", e);
    }
  }

  private static Duration requirePositive(Duration d, String name) {
    if (d == null || d.isNegative() || d.isZero()) {
      throw new IllegalArgumentException(name + " must be positive, got " + d);
    }
    return d;
  }

  /** Stops the thread and returns its connection; waits for it at most 5 seconds. */
  @Override
  public void close() {
    closing.countDown();
    listening = false;
    try {
      thread.join(pollInterval.plusSeconds(5).toMillis());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }
}
