package io.gpumeter.billing.ledger;

import io.gpumeter.billing.VoidReason;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Writes voids into {@code charge_voids}: {@code INSERT ... ON CONFLICT DO NOTHING}, so a void is
 * idempotent on the request id (the first reason stays). The triggers of migration V6 take the
 * voided charge out of the usage rollups in the same transaction as whichever of the void and the
 * charge is stored second.
 *
 * <p>A void that fails (PostgreSQL down) is retried every {@code retryMillis} on its own thread
 * until it is stored or the process stops; the voids still pending at {@link #close()} are logged
 * at ERROR with their request ids and reasons (what an operator has to void by hand). They are not
 * put into the outbox: a void matters only once its charge is in PostgreSQL, and a charge that is
 * still in the outbox will be replayed only when PostgreSQL is back, which is when the retry
 * succeeds too.
 */
public final class ChargeVoids implements AutoCloseable {
  private static final Logger log = LoggerFactory.getLogger(ChargeVoids.class);

  private final DataSource dataSource;
  private final long retryMillis;
  private final ScheduledExecutorService retries;
  private final Set<String> pending = ConcurrentHashMap.newKeySet();

  public ChargeVoids(DataSource dataSource, long retryMillis) {
    this.dataSource = Objects.requireNonNull(dataSource, "dataSource");
    this.retryMillis = retryMillis;
    this.retries =
        Executors.newSingleThreadScheduledExecutor(
            r -> {
              Thread t = new Thread(r, "gpumeter-charge-voids");
              t.setDaemon(true);
              return t;
            });
  }

  /** Stores the void; the future completes once it is committed (after retries if need be). */
  public CompletableFuture<Void> voidCharge(String requestId, VoidReason reason) {
    Objects.requireNonNull(requestId, "requestId");
    Objects.requireNonNull(reason, "reason");
    CompletableFuture<Void> done = new CompletableFuture<>();
    pending.add(requestId + " " + reason.dbName());
    retries.execute(() -> attempt(requestId, reason, done));
    return done;
  }

  private void attempt(String requestId, VoidReason reason, CompletableFuture<Void> done) {
    try {
      insert(requestId, reason);
      pending.remove(requestId + " " + reason.dbName());
      done.complete(null);
    } catch (SQLException | RuntimeException e) {
      log.warn("void of {} ({}) not stored yet, retrying: {}", requestId, reason, e.toString());
      if (!retries.isShutdown()) {
        retries.schedule(
            () -> attempt(requestId, reason, done), retryMillis, TimeUnit.MILLISECONDS);
      }
    }
  }

  private void insert(String requestId, VoidReason reason) throws SQLException {
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "INSERT INTO charge_voids (request_id, reason) VALUES (?, ?)"
                    + " ON CONFLICT (request_id) DO NOTHING")) {
      ps.setString(1, requestId);
      ps.setString(2, reason.dbName());
      ps.executeUpdate();
      if (!c.getAutoCommit()) {
        c.commit();
      }
    }
  }

  @Override
  public void close() {
    retries.shutdown();
    try {
      retries.awaitTermination(5, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    retries.shutdownNow();
    if (!pending.isEmpty()) {
      log.error("voids not stored at shutdown (void them by hand): {}", pending);
    }
  }
}
