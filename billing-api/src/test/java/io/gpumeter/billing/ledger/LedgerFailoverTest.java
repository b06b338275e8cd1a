package io.gpumeter.billing.ledger;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.BillingConfig;
import io.gpumeter.billing.CommitPoint;
import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.LedgerHealth;
import io.gpumeter.billing.LedgerUnavailableException;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.UsageRecord;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.BooleanSupplier;
import java.util.stream.Stream;
import org.awaitility.Awaitility;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The ledger when PostgreSQL dies: a real embedded server (one for the class) killed with SIGKILL
 * and restarted on the same folder and port, and a whole publishing process killed with SIGKILL.
 * Each test uses its own API key id, request-id prefix and outbox folder.
 */
class LedgerFailoverTest {
  @TempDir static Path tmp;
  static Database db;

  @BeforeAll
  static void start() {
    db =
        Database.start(
            DatabaseConfig.builder()
                .dataDirectory(tmp.resolve("pg"))
                .binaryCacheDirectory(TestSupport.binaryCache())
                .maximumPoolSize(4)
                .ledgerConnectionTimeout(Duration.ofMillis(500))
                .embeddedWatchdogInterval(Duration.ZERO) // the tests restart it themselves
                .build());
  }

  @AfterAll
  static void stop() {
    db.close();
  }

  @AfterEach
  void serverIsBack() {
    db.ensureEmbeddedRunning();
  }

  static LedgerConfig.Builder fastFailover(String outbox) {
    return LedgerConfig.custom()
        .outboxDirectory(tmp.resolve(outbox))
        .breakerOpenWait(Duration.ofMillis(300))
        .replayInterval(Duration.ofMillis(100))
        .retryBackoff(Duration.ofMillis(20));
  }

  static Billing billing(LedgerConfig ledger) {
    return Billing.open(db, BillingConfig.defaults().withLedger(ledger).withRetention(null));
  }

  /** kill -9 of the postmaster named in the first line of postmaster.pid. */
  static void killPostgres() throws Exception {
    long pid = db.embeddedPostmasterPid().orElseThrow();
    Process kill = new ProcessBuilder("kill", "-9", Long.toString(pid)).inheritIO().start();
    assertThat(kill.waitFor()).isZero();
    await(() -> !db.isEmbeddedRunning(), Duration.ofSeconds(10), "postmaster " + pid + " to die");
  }

  static void await(BooleanSupplier condition, Duration timeout, String what) {
    Awaitility.await(what)
        .atMost(timeout)
        .pollInterval(Duration.ofMillis(50))
        .until(condition::getAsBoolean);
  }

  static void awaitReplayed(Billing billing) throws Exception {
    await(
        () ->
            billing.health().outboxBytes() == 0 && billing.health().breakerState().equals("CLOSED"),
        Duration.ofSeconds(60),
        "the outbox to be replayed: " + billing.health());
  }

  /** request id → how many raw rows, for ids starting with {@code prefix}. */
  static Map<String, Integer> storedCounts(String prefix) throws Exception {
    Map<String, Integer> out = new HashMap<>();
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT request_id, count(*) FROM usage_records WHERE request_id LIKE ?"
                    + " GROUP BY request_id")) {
      ps.setString(1, prefix + "%");
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          out.put(rs.getString(1), rs.getInt(2));
        }
      }
    }
    return out;
  }

  /** Rows where usage_hourly and the sums of the raw rows disagree, for one key (both ways). */
  static long rollupMismatches(long keyId) throws Exception {
    String raw =
        "SELECT date_trunc('hour', finished_at, 'UTC'), model, device, count(*)::int8,"
            + " sum(device_ns)::int8, sum(prefill_ns)::int8, sum(decode_ns)::int8,"
            + " sum(prompt_tokens)::int8, sum(completion_tokens)::int8 FROM usage_records"
            + " WHERE api_key_id = ? GROUP BY 1, 2, 3";
    String hourly =
        "SELECT hour, model, device, requests, device_ns, prefill_ns, decode_ns, prompt_tokens,"
            + " completion_tokens FROM usage_hourly WHERE api_key_id = ?";
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT count(*) FROM (("
                    + raw
                    + " EXCEPT "
                    + hourly
                    + ") UNION ALL ("
                    + hourly
                    + " EXCEPT "
                    + raw
                    + ")) d")) {
      for (int i = 1; i <= 4; i++) {
        ps.setLong(i, keyId);
      }
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }

  static long countFor(long keyId) throws Exception {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT count(*) FROM usage_records WHERE api_key_id = ?")) {
      ps.setLong(1, keyId);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    }
  }

  static UsageRecord record(String id, long keyId) {
    return TestSupport.record(id, keyId, 77, "toy", Instant.now(), 700, 300, 7, 3);
  }

  /** Records published in each phase of the kill test (see there). */
  static final int PHASE = 400;

  @Test
  void sigkillOfPostgresDuringALoadLosesAndDoublesNothing() throws Exception {
    killPostgresUnderLoad(CommitPoint.POSTGRES, 9101, "kill-", "outbox-kill");
  }

  /**
   * The same with the local commit log as commit point: while PostgreSQL is down the log keeps the
   * charges (nothing goes to the outbox) and ships them, once each, when it is back.
   */
  @Test
  void sigkillOfPostgresDuringALoadWithALocalCommitPointLosesAndDoublesNothing() throws Exception {
    killPostgresUnderLoad(CommitPoint.LOCAL, 9105, "lkill-", "outbox-lkill");
  }

  private void killPostgresUnderLoad(CommitPoint point, long key, String prefix, String outbox)
      throws Exception {
    Map<String, CompletableFuture<Void>> futures = new ConcurrentHashMap<>();
    AtomicBoolean stop = new AtomicBoolean();
    // Each phase publishes a fixed number of records, so the work (and the outbox to replay) is
    // the same on a loaded machine: unpaced, the publishers kept going while a slow machine
    // restarted PostgreSQL, and the outbox to replay within the deadline grew with the load
    // (21,000 records at load 20). 800 at first: the kill comes after 400, with more on the way.
    Semaphore permits = new Semaphore(PHASE * 2);
    try (Billing billing =
        billing(fastFailover(outbox).commitPoint(point).maxBatchSize(200).build())) {
      List<Thread> publishers = new ArrayList<>();
      for (int t = 0; t < 4; t++) {
        int thread = t;
        Thread p =
            new Thread(
                () -> {
                  for (int i = 0; !stop.get(); i++) {
                    try {
                      if (!permits.tryAcquire(100, TimeUnit.MILLISECONDS)) {
                        i--;
                        continue; // this phase's records are all published: wait for the next
                      }
                    } catch (InterruptedException e) {
                      return;
                    }
                    String id = prefix + thread + "-" + i;
                    futures.put(id, billing.ledger().publish(record(id, key)));
                    if (i % 10 == 9) {
                      try {
                        Thread.sleep(5);
                      } catch (InterruptedException e) {
                        return;
                      }
                    }
                  }
                },
                "publisher-" + t);
        p.start();
        publishers.add(p);
      }
      await(() -> futures.size() >= PHASE, Duration.ofSeconds(30), "load on the database");
      killPostgres();
      int atKill = futures.size();
      // charges keep coming while the database is down: the breaker opens, the outbox fills
      permits.release(PHASE);
      await(
          () -> billing.health().degraded() && futures.size() >= atKill + PHASE,
          Duration.ofSeconds(30),
          "the breaker to open under load");
      assertThat(db.ensureEmbeddedRunning()).isTrue();
      int atRestart = futures.size();
      permits.release(PHASE);
      await(
          () -> futures.size() >= atRestart + PHASE,
          Duration.ofSeconds(30),
          "load on the restarted database");
      stop.set(true);
      for (Thread p : publishers) {
        p.join(10_000);
      }

      List<String> failed = new ArrayList<>();
      List<String> durable = new ArrayList<>();
      for (Map.Entry<String, CompletableFuture<Void>> e : futures.entrySet()) {
        try {
          e.getValue().get(60, TimeUnit.SECONDS);
          durable.add(e.getKey());
        } catch (ExecutionException ex) {
          failed.add(e.getKey() + ": " + ex.getCause());
        }
      }
      awaitReplayed(billing);
      assertThat(billing.awaitShipped(Duration.ofSeconds(60)))
          .as("the local commit log shipped: " + billing.unshippedRecords() + " left")
          .isTrue();
      LedgerHealth health = billing.health();
      System.out.printf(
          point
              + ": kill -9 under load: %d published (%d before the kill), %d durable, %d failed,"
              + " %d through the outbox, %d replayed%n",
          futures.size(),
          atKill,
          durable.size(),
          failed.size(),
          health.outboxedRecords(),
          health.replayedRecords());
      assertThat(failed).as("futures that failed").isEmpty();
      if (point == CommitPoint.POSTGRES) {
        assertThat(health.outboxedRecords())
            .as("records that went through the outbox")
            .isPositive();
      } else {
        assertThat(health.outboxedRecords())
            .as("with a local commit point the log, not the outbox, keeps what PostgreSQL misses")
            .isZero();
        assertThat(billing.unshippedRecords()).isZero();
      }
      assertThat(health.replayedRecords()).isEqualTo(health.outboxedRecords());

      Map<String, Integer> stored = storedCounts(prefix);
      assertThat(stored.values()).allMatch(n -> n == 1);
      assertThat(stored.keySet()).containsAll(durable);
      assertThat(stored).hasSameSizeAs(futures);
      assertThat(rollupMismatches(key)).isZero();
      assertThat(billing.health().ready()).isTrue();
    }
  }

  @Test
  void outboxFullWithPostgresDownRefusesNewWorkAndLosesNothingAccepted() throws Exception {
    long key = 9102;
    LedgerConfig lc =
        fastFailover("outbox-full")
            .outboxMaxBytes(16 * 1024)
            .outboxSegmentBytes(4096)
            .maxBatchSize(20)
            .build();
    try (Billing billing = billing(lc)) {
      for (int i = 0; i < 5; i++) {
        billing.ledger().publish(record("full-up-" + i, key)).get(10, TimeUnit.SECONDS);
      }
      killPostgres();
      List<String> accepted = new ArrayList<>();
      Throwable refusal = null;
      for (int i = 0; i < 5_000 && refusal == null; i++) {
        String id = "full-down-" + i;
        try {
          billing.ledger().publish(record(id, key)).get(30, TimeUnit.SECONDS);
          accepted.add(id);
        } catch (ExecutionException e) {
          refusal = e.getCause();
        }
      }
      assertThat(accepted).hasSizeGreaterThan(20);
      assertThat(refusal)
          .isInstanceOfAny(LedgerWriteException.class, LedgerUnavailableException.class);
      assertThat(refusal).hasMessageContaining("outbox");

      LedgerHealth health = billing.health();
      assertThat(health.ready()).isFalse();
      assertThat(health.reason()).contains("unavailable").contains("outbox is full");
      assertThat(billing.canAcceptWork()).isFalse();
      CompletableFuture<Void> late = billing.ledger().publish(record("full-late", key));
      assertThatThrownBy(() -> late.get(1, TimeUnit.SECONDS))
          .hasCauseInstanceOf(LedgerUnavailableException.class)
          .hasMessageContaining("outbox is full");

      assertThat(db.ensureEmbeddedRunning()).isTrue();
      awaitReplayed(billing);
      await(billing::canAcceptWork, Duration.ofSeconds(10), "ready again");
      assertThat(billing.health().ready()).isTrue();
      Map<String, Integer> stored = storedCounts("full-");
      assertThat(stored.values()).allMatch(n -> n == 1);
      assertThat(stored.keySet()).containsAll(accepted);
      assertThat(stored).doesNotContainKey("full-late");
      if (refusal instanceof LedgerWriteException) {
        assertThat(refusal).hasCauseInstanceOf(OutboxFullException.class);
      }
      assertThat(rollupMismatches(key)).isZero();
    }
  }

  @Test
  void aCorruptedSegmentIsReplayedIntoPostgresAroundTheDamage() throws Exception {
    long key = 9103;
    Path dir = tmp.resolve("outbox-corrupt");
    List<UsageRecord> records = new ArrayList<>();
    for (int i = 0; i < 10; i++) {
      records.add(record("corrupt-" + i, key));
    }
    try (Outbox box = Outbox.open(dir, 1 << 20, 1 << 20)) {
      for (UsageRecord r : records) {
        box.append(List.of(r)).get(10, TimeUnit.SECONDS);
      }
    }
    Path segment;
    try (Stream<Path> s = Files.list(dir)) {
      segment =
          s.filter(p -> p.getFileName().toString().startsWith("segment-"))
              .findFirst()
              .orElseThrow();
    }
    long offset = 0;
    for (int i = 0; i < 3; i++) {
      offset += 12 + UsageRecordCodec.encode(records.get(i)).length;
    }
    try (RandomAccessFile f = new RandomAccessFile(segment.toFile(), "rw")) {
      f.seek(offset + 12 + 9); // a payload byte of record 3
      int b = f.read();
      f.seek(offset + 12 + 9);
      f.write(b ^ 0x5A);
    }
    try (Billing billing = billing(fastFailover("outbox-corrupt").build())) {
      awaitReplayed(billing);
      LedgerHealth health = billing.health();
      assertThat(health.damagedFrames()).isEqualTo(1);
      assertThat(health.replayedRecords()).isEqualTo(9);
    }
    assertThat(storedCounts("corrupt-").keySet())
        .containsExactlyInAnyOrder(
            "corrupt-0",
            "corrupt-1",
            "corrupt-2",
            "corrupt-4",
            "corrupt-5",
            "corrupt-6",
            "corrupt-7",
            "corrupt-8",
            "corrupt-9");
    try (Stream<Path> q = Files.list(dir.resolve("quarantine"))) {
      assertThat(q.count()).isEqualTo(1);
    }
    assertThat(rollupMismatches(key)).isZero();
  }

  @Test
  void aKilledProcessLeavesItsOutboxToTheNextAndEveryDurableRecordLandsOnce() throws Exception {
    killPublishingProcess(CommitPoint.POSTGRES, 9104, "crash", "outbox-crash");
  }

  /**
   * The same with the local commit log as commit point: what the killed process acknowledged while
   * PostgreSQL was down is in its commit log, shipped by the next process before it opens.
   */
  @Test
  void aKilledProcessWithALocalCommitPointLeavesItsLogToTheNextAndEveryDurableRecordLandsOnce()
      throws Exception {
    killPublishingProcess(CommitPoint.LOCAL, 9106, "lcrash", "outbox-lcrash");
  }

  private void killPublishingProcess(CommitPoint point, long key, String prefix, String outboxName)
      throws Exception {
    Path outbox = tmp.resolve(outboxName);
    String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
    String cp =
        System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
    Process child =
        new ProcessBuilder(
                java,
                "-Xmx256m",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                cp,
                CrashingPublisher.class.getName(),
                db.jdbcUrl() + "?password=" + TestSupport.ownerPassword(tmp.resolve("pg")),
                outbox.toString(),
                prefix,
                Long.toString(key),
                point.name())
            .redirectErrorStream(true)
            .start();
    Set<String> durable = ConcurrentHashMap.newKeySet();
    Set<String> failed = ConcurrentHashMap.newKeySet();
    CountDownLatch ready = new CountDownLatch(1);
    Thread reader =
        new Thread(
            () -> {
              try (BufferedReader r =
                  new BufferedReader(
                      new InputStreamReader(child.getInputStream(), StandardCharsets.UTF_8))) {
                for (String line; (line = r.readLine()) != null; ) {
                  if (line.equals("READY")) {
                    ready.countDown();
                  } else if (line.startsWith("DURABLE ")) {
                    durable.add(line.substring(8));
                  } else if (line.startsWith("FAILED ")) {
                    failed.add(line.substring(7));
                  } else if (line.contains("ERROR") || line.contains("Exception")) {
                    System.out.println("child: " + line);
                  }
                }
              } catch (java.io.IOException e) {
                // the child was killed
              }
            },
            "child-reader");
    reader.start();
    try {
      assertThat(ready.await(60, TimeUnit.SECONDS)).as("child started").isTrue();
      // A fixed number of records per phase (the child publishes what it is told, then waits),
      // so the outbox the next process must replay within its deadline does not grow with the
      // time a loaded machine takes to notice the 500 below.
      child.getOutputStream().write("GO 600\n".getBytes(StandardCharsets.UTF_8));
      child.getOutputStream().flush();
      await(() -> durable.size() >= 300, Duration.ofSeconds(30), "300 records in PostgreSQL");
      killPostgres();
      int beforeKill = durable.size();
      child.getOutputStream().write("GO 800\n".getBytes(StandardCharsets.UTF_8));
      child.getOutputStream().flush();
      await(
          () -> durable.size() >= beforeKill + 500,
          Duration.ofSeconds(30),
          "500 more durable records (in the outbox)");
    } finally {
      child.destroyForcibly(); // SIGKILL: no close, no drain
      // Gone for sure before the next process opens its outbox: the dead one's lock on it is
      // released only when its files are closed at exit.
      assertThat(child.waitFor(60, TimeUnit.SECONDS)).as("the child exited").isTrue();
      reader.join(60_000);
      assertThat(reader.isAlive()).as("the child's output read to its end").isFalse();
    }
    int durableAtCrash = durable.size();
    Path left = point == CommitPoint.POSTGRES ? outbox : Ledger.commitLogDirectory(outbox);
    String leftPrefix = point == CommitPoint.POSTGRES ? "segment-" : "commit-";
    try (Stream<Path> s = Files.list(left)) {
      assertThat(s.anyMatch(p -> p.getFileName().toString().startsWith(leftPrefix)))
          .as("the dead process left segments in " + left)
          .isTrue();
    }

    assertThat(db.ensureEmbeddedRunning()).isTrue();
    try (Billing next = billing(fastFailover(outboxName).commitPoint(point).build())) {
      awaitReplayed(next);
      System.out.printf(
          point
              + ": process crash: %d durable before SIGKILL, %d failed, %d replayed by the next"
              + " process%n",
          durableAtCrash,
          failed.size(),
          next.health().replayedRecords());
      if (point == CommitPoint.POSTGRES) {
        assertThat(next.health().replayedRecords()).isPositive();
      } else {
        // shipped from the log before open returned; nothing was outboxed
        assertThat(next.health().replayedRecords()).isZero();
        assertThat(next.unshippedRecords()).isZero();
      }
    }
    Map<String, Integer> stored = storedCounts(prefix + "-");
    assertThat(failed).as("futures that failed in the child").isEmpty();
    assertThat(stored.values()).allMatch(n -> n == 1);
    assertThat(stored.keySet()).containsAll(durable);
    assertThat(rollupMismatches(key)).isZero();
    assertThat(countFor(key)).isEqualTo(stored.size());
  }
}
