package io.gpumeter.billing.ledger;

import io.gpumeter.billing.VoidReason;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
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
 * until it is stored or the process stops. They are not put into the outbox: a void matters only
 * once its charge is in PostgreSQL, and a charge that is still in the outbox will be replayed only
 * when PostgreSQL is back, which is when the retry succeeds too.
 *
 * <p><b>Journal:</b> with a journal directory (the outbox's, which one process holds), every void
 * is first appended to {@value #JOURNAL_FILE} there and fsynced, before it is attempted; the file
 * is emptied whenever no void is pending. At start the voids in it are attempted again
 * (idempotent), so a process killed while voids were pending (PostgreSQL down) loses none: the next
 * process on the same outbox stores them. Without a journal the voids still pending at {@link
 * #close()} are only logged at ERROR (what an operator has to void by hand).
 */
public final class ChargeVoids implements AutoCloseable {
  private static final Logger log = LoggerFactory.getLogger(ChargeVoids.class);

  private final DataSource dataSource;
  private final long retryMillis;
  private final ScheduledExecutorService retries;
  private final Set<String> pending = ConcurrentHashMap.newKeySet();

  /** The pending-void journal's file name in the journal directory. */
  public static final String JOURNAL_FILE = "pending-voids.log";

  private final Object journalLock = new Object();
  private final FileChannel journal;

  /** Without a journal: pending voids die with the process. */
  public ChargeVoids(DataSource dataSource, long retryMillis) {
    this(dataSource, retryMillis, null);
  }

  /**
   * @param journalDirectory where {@value #JOURNAL_FILE} is kept (one process at a time: the
   *     outbox's directory), or null for none; its voids from an earlier process are attempted
   *     again
   * @throws IllegalStateException if the journal cannot be opened or read
   */
  public ChargeVoids(DataSource dataSource, long retryMillis, Path journalDirectory) {
    this.dataSource = Objects.requireNonNull(dataSource, "dataSource");
    this.retryMillis = retryMillis;
    this.retries =
        Executors.newSingleThreadScheduledExecutor(
            r -> {
              Thread t = new Thread(r, "gpumeter-charge-voids");
              t.setDaemon(true);
              return t;
            });
    List<String> left = new ArrayList<>();
    if (journalDirectory == null) {
      this.journal = null;
    } else {
      Path file = journalDirectory.resolve(JOURNAL_FILE);
      try {
        Files.createDirectories(journalDirectory);
        if (Files.exists(file)) {
          for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
            if (!line.isBlank()) {
              left.add(line);
            }
          }
        }
        this.journal =
            FileChannel.open(
                file,
                StandardOpenOption.CREATE,
                StandardOpenOption.WRITE,
                StandardOpenOption.APPEND);
      } catch (IOException e) {
        retries.shutdownNow();
        throw new IllegalStateException("cannot open the void journal " + file, e);
      }
    }
    for (String line : left) {
      int space = line.indexOf(' ');
      VoidReason reason = reasonOf(space < 0 ? "" : line.substring(space + 1));
      if (space <= 0 || reason == null) {
        log.error("void journal line not understood, void it by hand: {}", line);
        continue;
      }
      String requestId = line.substring(0, space);
      log.warn("void of {} ({}) left pending by an earlier process: storing it", requestId, reason);
      pending.add(line);
      CompletableFuture<Void> done = new CompletableFuture<>();
      retries.execute(() -> attempt(requestId, reason, done));
    }
  }

  private static VoidReason reasonOf(String dbName) {
    for (VoidReason r : VoidReason.values()) {
      if (r.dbName().equals(dbName)) {
        return r;
      }
    }
    return null;
  }

  /** Appends and fsyncs {@code entry}; a failure is logged (the void is still attempted). */
  private void journal(String entry) {
    if (journal == null) {
      return;
    }
    synchronized (journalLock) {
      try {
        ByteBuffer b = ByteBuffer.wrap((entry + "\n").getBytes(StandardCharsets.UTF_8));
        while (b.hasRemaining()) {
          journal.write(b);
        }
        journal.force(false);
      } catch (IOException e) {
        log.error("void {} not journaled (lost if the process dies before it is stored)", entry, e);
      }
    }
  }

  /** Empties the journal once no void is pending. */
  private void trimJournal() {
    if (journal == null) {
      return;
    }
    synchronized (journalLock) {
      if (!pending.isEmpty()) {
        return;
      }
      try {
        journal.truncate(0);
        journal.force(false);
      } catch (IOException e) {
        log.warn("void journal not emptied (its voids are attempted again at the next start)", e);
      }
    }
  }

  /** Stores the void; the future completes once it is committed (after retries if need be). */
  public CompletableFuture<Void> voidCharge(String requestId, VoidReason reason) {
    Objects.requireNonNull(requestId, "requestId");
    Objects.requireNonNull(reason, "reason");
    CompletableFuture<Void> done = new CompletableFuture<>();
    String entry = requestId + " " + reason.dbName();
    if (requestId.isEmpty() || requestId.chars().anyMatch(Character::isWhitespace)) {
      throw new IllegalArgumentException("a request id has no whitespace: '" + requestId + "'");
    }
    pending.add(entry);
    // Journaled on the voids' own thread (an fsync must not run on the caller's event loop),
    // before the first attempt.
    retries.execute(
        () -> {
          journal(entry);
          attempt(requestId, reason, done);
        });
    return done;
  }

  private void attempt(String requestId, VoidReason reason, CompletableFuture<Void> done) {
    try {
      insert(requestId, reason);
      pending.remove(requestId + " " + reason.dbName());
      trimJournal();
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
      if (journal != null) {
        log.error(
            "voids not stored at shutdown (kept in the journal for the next start): {}", pending);
      } else {
        log.error("voids not stored at shutdown (void them by hand): {}", pending);
      }
    }
    if (journal != null) {
      try {
        journal.close();
      } catch (IOException e) {
        log.warn("closing the void journal", e);
      }
    }
  }
}
