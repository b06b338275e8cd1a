package io.gpumeter.billing.ledger;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.github.resilience4j.circuitbreaker.CircuitBreaker;
import io.gpumeter.billing.Durability;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.LedgerUnavailableException;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.SQLException;
import java.sql.SQLTransientConnectionException;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The breaker, retry and outbox decisions, against a scripted database (a {@link LedgerStore} that
 * fails on demand with the exceptions the JDBC store throws) and a real outbox on disk.
 */
class FailoverLedgerStoreTest {
  @TempDir Path dir;

  static final Instant T0 = Instant.parse("2026-11-27T10:00:00Z");

  static UsageRecord record(String id) {
    return new UsageRecord(
        id,
        7,
        3,
        "toy",
        TimerInfo.cpu("cpu"),
        "tokens",
        100,
        60,
        40,
        5,
        2,
        10,
        3,
        UsageStatus.OK,
        T0,
        T0.plusMillis(5));
  }

  static List<UsageRecord> records(String prefix, int n) {
    List<UsageRecord> out = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      out.add(record(prefix + i));
    }
    return out;
  }

  /** A database that stores ids, or fails the way it is told to. */
  static final class ScriptedDatabase implements LedgerStore {
    final Set<String> stored = Collections.synchronizedSet(new LinkedHashSet<>());
    final AtomicInteger calls = new AtomicInteger();
    volatile boolean down;
    volatile int failNext; // transient failures before the next success
    volatile String refuse; // request id refused as a record error

    @Override
    public int write(List<UsageRecord> records) throws LedgerWriteException {
      calls.incrementAndGet();
      if (down) {
        throw new LedgerWriteException(
            "could not store", new SQLTransientConnectionException("refused", "08001"), false);
      }
      if (failNext > 0) {
        failNext--;
        throw new LedgerWriteException(
            "could not store", new SQLException("terminating connection", "57P01"), false);
      }
      for (UsageRecord r : records) {
        if (r.requestId().equals(refuse)) {
          throw new LedgerWriteException(
              "could not store", new SQLException("invalid byte sequence", "22021"), true);
        }
      }
      int n = 0;
      for (UsageRecord r : records) {
        if (stored.add(r.requestId())) {
          n++;
        }
      }
      return n;
    }

    final AtomicInteger pings = new AtomicInteger();

    void ping() throws SQLException {
      pings.incrementAndGet();
      if (down) {
        throw new SQLTransientConnectionException("refused", "08001");
      }
    }
  }

  /**
   * The failover writer and its replayer, as {@link Ledger} wires them; ticks driven by the test.
   */
  static final class Failover implements AutoCloseable {
    final FailoverLedgerStore store;
    final OutboxReplayer replayer;

    Failover(LedgerStore database, OutboxReplayer.Probe probe, Outbox box, LedgerConfig cfg) {
      store = new FailoverLedgerStore(database, box, cfg);
      replayer = new OutboxReplayer(store, probe, cfg); // not started: the test ticks it
    }

    @Override
    public void close() {
      replayer.close();
    }
  }

  /**
   * Replays until {@code done}: the first ticks may come before the breaker's open wait is over
   * (then the replayer does nothing yet).
   */
  static void replayUntil(Failover f, java.util.concurrent.Callable<Boolean> done) {
    await()
        .atMost(Duration.ofSeconds(10))
        .pollInterval(Duration.ofMillis(10))
        .until(
            () -> {
              f.replayer.replayTick();
              return done.call();
            });
  }

  LedgerConfig config() {
    return LedgerConfig.custom()
        .retryAttempts(3)
        .retryBackoff(Duration.ofMillis(1))
        .breakerWindow(4, 3)
        .breakerOpenWait(Duration.ofMillis(50))
        .replayInterval(Duration.ofHours(1)) // ticks driven by the test
        .replayChunk(4)
        .outboxSegmentBytes(4096)
        .build();
  }

  @Test
  void transientErrorsAreRetriedAndThenSucceedWithoutTheOutbox() throws Exception {
    ScriptedDatabase db = new ScriptedDatabase();
    try (Outbox box = Outbox.open(dir, 1 << 20, 4096);
        Failover f = new Failover(db, db::ping, box, config())) {
      db.failNext = 2; // a blip: two failed attempts, the third gets through
      assertThat(f.store.write(records("a", 3))).isEqualTo(3);
      assertThat(db.calls.get()).isEqualTo(3);
      assertThat(box.isEmpty()).isTrue();
      assertThat(db.stored).hasSize(3);
    }
    ScriptedDatabase db2 = new ScriptedDatabase();
    try (Outbox box = Outbox.open(dir.resolve("2"), 1 << 20, 4096);
        Failover f = new Failover(db2, db2::ping, box, config())) {
      db2.failNext = 1;
      assertThat(f.store.write(records("b", 3))).isEqualTo(3);
      assertThat(db2.calls.get()).isEqualTo(2);
      assertThat(f.store.breakerState()).isEqualTo(CircuitBreaker.State.CLOSED);
      assertThat(box.isEmpty()).isTrue();
    }
  }

  @Test
  void aRecordErrorIsNeitherRetriedNorOutboxedAndARefusedRecordIsDeadLettered() throws Exception {
    ScriptedDatabase db = new ScriptedDatabase();
    try (Outbox box = Outbox.open(dir, 1 << 20, 4096);
        Failover f = new Failover(db, db::ping, box, config())) {
      db.refuse = "bad";
      // a batch of several: thrown as is, so that the writer writes its records one by one
      assertThatThrownBy(() -> f.store.write(List.of(record("bad"), record("good"))))
          .isInstanceOf(LedgerWriteException.class)
          .matches(e -> ((LedgerWriteException) e).isRecordError());
      assertThat(db.calls.get()).isEqualTo(1);
      assertThat(box.isEmpty()).isTrue();
      // the record alone: set aside durably in the dead-letter store, never only logged
      assertThat(f.store.write(List.of(record("bad")))).isZero();
      assertThat(db.calls.get()).isEqualTo(2);
      assertThat(box.isEmpty()).isTrue();
      assertThat(box.deadLettersWaiting()).isEqualTo(1);
      // record errors are successes for the breaker: the database answered
      for (int i = 0; i < 5; i++) {
        assertThat(f.store.write(List.of(record("bad")))).isZero();
      }
      assertThat(f.store.breakerState()).isEqualTo(CircuitBreaker.State.CLOSED);
      assertThat(box.deadLettersWaiting()).isEqualTo(6);
    }
    // the count survives a restart: it is read from disk
    try (Outbox again = Outbox.open(dir, 1 << 20, 4096)) {
      assertThat(again.deadLettersWaiting()).isEqualTo(6);
    }
  }

  @Test
  void aDeadDatabaseOpensTheBreakerAndBatchesGoStraightToTheOutbox() throws Exception {
    ScriptedDatabase db = new ScriptedDatabase();
    try (Outbox box = Outbox.open(dir, 1 << 20, 4096);
        Failover f = new Failover(db, db::ping, box, config())) {
      db.down = true;
      assertThat(f.store.write(records("a", 3))).isEqualTo(3); // durable in the outbox
      assertThat(f.store.breakerState()).isEqualTo(CircuitBreaker.State.OPEN);
      int callsWhenOpen = db.calls.get();
      assertThat(callsWhenOpen).isBetween(2, 3); // opened after the window's minimum
      f.store.write(records("b", 3));
      f.store.write(records("c", 3));
      assertThat(db.calls.get()).isEqualTo(callsWhenOpen); // never touched while open
      assertThat(box.appendedRecords()).isEqualTo(9);
      assertThat(f.store.outboxedRecords()).isEqualTo(9);
      assertThat(f.store.isAccepting()).isTrue(); // room in the outbox

      // still down: the probe after the open wait fails and the breaker opens again
      replayUntil(f, () -> db.pings.get() > 0);
      assertThat(f.store.breakerState()).isEqualTo(CircuitBreaker.State.OPEN);
      assertThat(db.stored).isEmpty();

      // back: the probe closes the breaker and the backlog is replayed in order
      db.down = false;
      replayUntil(f, () -> f.store.breakerState() == CircuitBreaker.State.CLOSED);
      assertThat(box.isEmpty()).isTrue();
      assertThat(new ArrayList<>(db.stored))
          .containsExactly("a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1", "c2");
      assertThat(f.replayer.replayedRecords()).isEqualTo(9);
    }
  }

  @Test
  void aNonTransientFailureIsNotRetriedButStillGoesToTheOutbox() throws Exception {
    LedgerStore broken =
        records -> {
          throw new LedgerWriteException(
              "could not store", new SQLException("relation does not exist", "42P01"), false);
        };
    AtomicInteger calls = new AtomicInteger();
    LedgerStore counting =
        records -> {
          calls.incrementAndGet();
          return broken.write(records);
        };
    try (Outbox box = Outbox.open(dir, 1 << 20, 4096);
        Failover f = new Failover(counting, () -> {}, box, config())) {
      assertThat(f.store.write(records("a", 2))).isEqualTo(2);
      assertThat(calls.get()).isEqualTo(1);
      assertThat(box.appendedRecords()).isEqualTo(2);
      assertThat(f.store.lastError()).contains("42P01");
    }
  }

  @Test
  void databaseDownAndOutboxFullRefusesWithAClearReasonAndKeepsWhatItHas() throws Exception {
    ScriptedDatabase db = new ScriptedDatabase();
    db.down = true;
    LedgerConfig cfg = LedgerConfig.from(config()).durability(Durability.DURABLE).build();
    try (Outbox box = Outbox.open(dir, 4096, 4096);
        Failover f = new Failover(db, db::ping, box, cfg);
        LedgerWriter writer = new LedgerWriter(f.store, cfg.withMaxBatchSize(1))) {
      List<String> accepted = new ArrayList<>();
      Throwable refusal = null;
      for (int i = 0; i < 200 && refusal == null; i++) {
        CompletableFuture<Void> published = writer.publish(record("r" + i));
        try {
          published.get(10, TimeUnit.SECONDS);
          accepted.add("r" + i);
        } catch (ExecutionException e) {
          refusal = e.getCause();
        }
      }
      assertThat(accepted).isNotEmpty();
      assertThat(refusal)
          .isInstanceOf(LedgerWriteException.class)
          .hasCauseInstanceOf(OutboxFullException.class)
          .hasMessageContaining("not durable")
          .hasMessageContaining("outbox refused");
      assertThat(f.store.isAccepting()).isFalse();
      assertThat(f.store.refusalReason()).contains("unavailable").contains("outbox is full");
      assertThat(writer.isAccepting()).isFalse();
      // new publishes fail at once, with the reason
      CompletableFuture<Void> refused = writer.publish(record("late"));
      assertThat(refused).isCompletedExceptionally();
      assertThatThrownBy(refused::join)
          .hasCauseInstanceOf(LedgerUnavailableException.class)
          .hasMessageContaining("outbox is full");

      db.down = false;
      replayUntil(f, box::isEmpty);
      assertThat(db.stored).containsExactlyElementsOf(accepted);
      assertThat(f.store.isAccepting()).isTrue();
      writer.publish(record("after")).get(10, TimeUnit.SECONDS);
      assertThat(db.stored).contains("after");
    }
  }

  @Test
  void aRecordTheDatabaseRefusesOnReplayIsSetAsideAndTheRestLands() throws Exception {
    ScriptedDatabase db = new ScriptedDatabase();
    try (Outbox box = Outbox.open(dir, 1 << 20, 4096);
        Failover f = new Failover(db, db::ping, box, config())) {
      db.down = true;
      f.store.write(records("a", 6));
      db.down = false;
      db.refuse = "a3";
      replayUntil(f, box::isEmpty);
      assertThat(db.stored).containsExactlyInAnyOrder("a0", "a1", "a2", "a4", "a5");
      assertThat(box.deadLetteredRecords()).isEqualTo(1);
      assertThat(Files.size(dir.resolve("dead-letter.log"))).isPositive();
      assertThat(box.deadLetteredRecords()).isEqualTo(1);
    }
  }

  @Test
  void fastModeCompletesOnEnqueueAndDurableModeOnlyWhenStored() throws Exception {
    ScriptedDatabase db = new ScriptedDatabase();
    try (Outbox box = Outbox.open(dir, 1 << 20, 4096);
        Failover f = new Failover(db, db::ping, box, config())) {
      java.util.concurrent.CountDownLatch gate = new java.util.concurrent.CountDownLatch(1);
      LedgerStore held =
          records -> {
            try {
              gate.await();
            } catch (InterruptedException e) {
              Thread.currentThread().interrupt();
            }
            return f.store.write(records);
          };
      try (LedgerWriter fast = new LedgerWriter(held, config().withDurability(Durability.FAST));
          LedgerWriter durable = new LedgerWriter(held, config())) {
        CompletableFuture<Void> fastDone = fast.publish(record("f"));
        CompletableFuture<Void> d = durable.publish(record("d"));
        assertThat(fastDone).isCompleted();
        // the store is held: durable must stay pending however long we look
        await()
            .during(Duration.ofMillis(50))
            .atMost(Duration.ofSeconds(5))
            .until(() -> !d.isDone());
        gate.countDown();
        d.get(10, TimeUnit.SECONDS);
      }
      assertThat(db.stored).containsExactlyInAnyOrder("f", "d");
    }
  }

  @Test
  void transientClassification() {
    assertThat(TransientErrors.isTransient(new SQLException("x", "08006"))).isTrue();
    assertThat(TransientErrors.isTransient(new SQLException("x", "57P01"))).isTrue();
    assertThat(TransientErrors.isTransient(new SQLTransientConnectionException("timeout")))
        .isTrue();
    assertThat(
            TransientErrors.isTransient(
                new LedgerWriteException("w", new java.net.ConnectException("refused"), false)))
        .isTrue();
    assertThat(TransientErrors.isTransient(new SQLException("x", "23505"))).isFalse();
    assertThat(TransientErrors.isTransient(new SQLException("x", "42P01"))).isFalse();
    assertThat(
            TransientErrors.isTransient(
                new LedgerWriteException("w", new SQLException("x", "08006"), true)))
        .isFalse();
  }
}
