package io.gpumeter.billing.ledger;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.LedgerFullException;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.metering.UsageRecord;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * Queueing behaviour that needs a store which can be held still or made to fail on demand; the same
 * {@link LedgerStore} interface as the JDBC store.
 */
class LedgerWriterUnitTest {
  static final Instant T0 = Instant.parse("2026-03-01T10:00:00Z");

  /** Records every batch; blocks while {@code gate} is closed; fails on request. */
  static final class ScriptedStore implements LedgerStore {
    final List<List<UsageRecord>> batches = Collections.synchronizedList(new ArrayList<>());
    final Set<String> stored = Collections.synchronizedSet(new HashSet<>());
    volatile CountDownLatch gate = new CountDownLatch(0);
    final CountDownLatch entered = new CountDownLatch(1);
    volatile RuntimeException crash;
    volatile boolean down;

    @Override
    public int write(List<UsageRecord> records) throws LedgerWriteException {
      entered.countDown();
      try {
        gate.await();
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
      if (crash != null) {
        RuntimeException c = crash;
        crash = null;
        throw c;
      }
      if (down) {
        throw new LedgerWriteException("database down", null, false);
      }
      batches.add(List.copyOf(records));
      int n = 0;
      for (UsageRecord r : records) {
        if (stored.add(r.requestId())) {
          n++;
        }
      }
      return n;
    }
  }

  @Test
  void fullQueueFailsAtOnceWithoutBlocking() throws Exception {
    ScriptedStore store = new ScriptedStore();
    store.gate = new CountDownLatch(1);
    LedgerConfig cfg = LedgerConfig.defaults().withQueueCapacity(10).withMaxBatchSize(1);
    try (LedgerWriter ledger = new LedgerWriter(store, cfg)) {
      CompletableFuture<Void> first = ledger.publish(TestSupport.record("q-0", 1, T0));
      assertThat(store.entered.await(5, TimeUnit.SECONDS)).isTrue(); // writer holds q-0
      List<CompletableFuture<Void>> queued = new ArrayList<>();
      for (int i = 1; i <= 10; i++) {
        queued.add(ledger.publish(TestSupport.record("q-" + i, 1, T0)));
      }
      long t0 = System.nanoTime();
      CompletableFuture<Void> refused = ledger.publish(TestSupport.record("q-11", 1, T0));
      assertThat(System.nanoTime() - t0).isLessThan(TimeUnit.MILLISECONDS.toNanos(100));
      assertThat(refused).isCompletedExceptionally();
      assertThatThrownBy(refused::join).hasCauseInstanceOf(LedgerFullException.class);
      assertThat(ledger.stats().rejected()).isEqualTo(1);
      assertThat(ledger.stats().queued()).isEqualTo(10);

      store.gate.countDown();
      first.get(5, TimeUnit.SECONDS);
      CompletableFuture.allOf(queued.toArray(CompletableFuture[]::new)).get(5, TimeUnit.SECONDS);
      assertThat(store.stored).hasSize(11);
    }
  }

  @Test
  void batchesRespectTheMaximumSize() throws Exception {
    ScriptedStore store = new ScriptedStore();
    store.gate = new CountDownLatch(1);
    try (LedgerWriter ledger =
        new LedgerWriter(store, LedgerConfig.defaults().withMaxBatchSize(16))) {
      List<CompletableFuture<Void>> fs = new ArrayList<>();
      fs.add(ledger.publish(TestSupport.record("b-0", 1, T0)));
      assertThat(store.entered.await(5, TimeUnit.SECONDS)).isTrue();
      for (int i = 1; i < 100; i++) {
        fs.add(ledger.publish(TestSupport.record("b-" + i, 1, T0)));
      }
      store.gate.countDown();
      CompletableFuture.allOf(fs.toArray(CompletableFuture[]::new)).get(5, TimeUnit.SECONDS);
    }
    assertThat(store.batches).allMatch(b -> b.size() <= 16);
    assertThat(store.batches.stream().mapToInt(List::size).sum()).isEqualTo(100);
    assertThat(store.batches.size()).isLessThanOrEqualTo(1 + 7); // 1 + ceil(99 / 16)
  }

  @Test
  void storeFailureFailsTheBatchAndTheWriterCarriesOn() throws Exception {
    ScriptedStore store = new ScriptedStore();
    try (LedgerWriter ledger = new LedgerWriter(store, LedgerConfig.defaults())) {
      store.down = true;
      CompletableFuture<Void> lost = ledger.publish(TestSupport.record("f-1", 1, T0));
      assertThatThrownBy(() -> lost.get(5, TimeUnit.SECONDS))
          .isInstanceOf(ExecutionException.class)
          .hasCauseInstanceOf(LedgerWriteException.class);

      store.down = false;
      store.crash = new IllegalStateException("bug in a store");
      CompletableFuture<Void> crashed = ledger.publish(TestSupport.record("f-2", 1, T0));
      assertThatThrownBy(() -> crashed.get(5, TimeUnit.SECONDS))
          .hasCauseInstanceOf(IllegalStateException.class);

      ledger.publish(TestSupport.record("f-3", 1, T0)).get(5, TimeUnit.SECONDS);
      assertThat(ledger.stats().failed()).isEqualTo(2);
      assertThat(ledger.stats().stored()).isEqualTo(1);
    }
  }

  @Test
  void closeFailsWhatCannotBeWrittenInTime() throws Exception {
    ScriptedStore store = new ScriptedStore();
    store.gate = new CountDownLatch(1);
    LedgerWriter ledger =
        new LedgerWriter(
            store,
            LedgerConfig.defaults().withMaxBatchSize(1).withCloseTimeout(Duration.ofMillis(200)));
    CompletableFuture<Void> stuck = ledger.publish(TestSupport.record("c-0", 1, T0));
    assertThat(store.entered.await(5, TimeUnit.SECONDS)).isTrue();
    CompletableFuture<Void> queued = ledger.publish(TestSupport.record("c-1", 1, T0));
    ledger.close();
    assertThat(queued).isCompletedExceptionally();
    assertThat(stuck).isNotDone(); // still being written; completes when the store returns
    store.gate.countDown();
    stuck.get(5, TimeUnit.SECONDS);
  }

  @Test
  void publishersRacingWithCloseNeverHang() throws Exception {
    for (int round = 0; round < 20; round++) {
      ScriptedStore store = new ScriptedStore();
      LedgerWriter ledger =
          new LedgerWriter(store, LedgerConfig.defaults().withLinger(Duration.ZERO));
      List<CompletableFuture<Void>> fs = Collections.synchronizedList(new ArrayList<>());
      int r = round;
      Thread publisher =
          new Thread(
              () -> {
                for (int i = 0; i < 2000; i++) {
                  fs.add(ledger.publish(TestSupport.record("race-" + r + "-" + i, 1, T0)));
                }
              });
      publisher.start();
      Thread.sleep(round % 3);
      ledger.close();
      publisher.join();
      assertThat(fs).hasSize(2000);
      for (int i = 0; i < fs.size(); i++) {
        CompletableFuture<Void> f = fs.get(i);
        assertThat(f).as("future left pending").isDone();
        if (!f.isCompletedExceptionally()) {
          assertThat(store.stored).contains("race-" + r + "-" + i);
        }
      }
    }
  }

  /**
   * The store hears of the hand-over ({@link LedgerStore#acknowledged()}, where the local commit
   * log starts shipping) only after every future of the batch it made durable is complete, and not
   * for a batch that failed.
   */
  @Test
  void theStoreHearsOfTheHandOverOnlyAfterTheBatchsFuturesCompleted() throws Exception {
    Map<String, CompletableFuture<Void>> futures = new ConcurrentHashMap<>();
    List<Boolean> doneAtAck = Collections.synchronizedList(new ArrayList<>());
    CountDownLatch gate = new CountDownLatch(1);
    LedgerStore store =
        new LedgerStore() {
          private List<UsageRecord> last = List.of();

          @Override
          public int write(List<UsageRecord> records) throws LedgerWriteException {
            try {
              gate.await();
            } catch (InterruptedException e) {
              Thread.currentThread().interrupt();
            }
            if (records.stream().anyMatch(r -> r.requestId().startsWith("bad"))) {
              throw new LedgerWriteException("refused", null, false);
            }
            last = List.copyOf(records);
            return records.size();
          }

          @Override
          public void acknowledged() {
            doneAtAck.add(last.stream().allMatch(r -> futures.get(r.requestId()).isDone()));
          }
        };
    LedgerConfig cfg = LedgerConfig.defaults().withMaxBatchSize(4);
    try (LedgerWriter ledger = new LedgerWriter(store, cfg)) {
      for (String id : List.of("a-0", "a-1", "a-2", "a-3", "a-4")) {
        futures.put(id, ledger.publish(TestSupport.record(id, 1, T0)));
      }
      gate.countDown();
      CompletableFuture.allOf(futures.values().toArray(CompletableFuture[]::new))
          .get(30, TimeUnit.SECONDS);
      CompletableFuture<Void> bad = ledger.publish(TestSupport.record("bad-0", 1, T0));
      assertThatThrownBy(() -> bad.get(30, TimeUnit.SECONDS))
          .isInstanceOf(ExecutionException.class);
    }
    // 5 records in batches of at most 4 (the first may be taken alone): 2 or 3 acknowledged
    // batches, none for the refused one, each after all of its futures completed
    assertThat(doneAtAck).hasSizeBetween(2, 3).containsOnly(true);
  }
}
