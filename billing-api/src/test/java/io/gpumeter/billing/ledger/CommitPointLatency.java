package io.gpumeter.billing.ledger;

import io.gpumeter.billing.Durability;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.MeasuredDelta;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.UsageRecord;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Function;

/**
 * What one durable charge costs at each candidate commit point, on this machine's disk. Not a test:
 * a main that starts an embedded PostgreSQL (fsync on) and, alternating round by round so the
 * machine's drift shows in every variant alike, measures publish → durable for:
 *
 * <ul>
 *   <li>{@code pg-linger2ms}: the {@link LedgerWriter} onto {@link JdbcLedgerStore} with the old 2
 *       ms batch linger;
 *   <li>{@code pg-nolinger}: the same with no linger (flush at once, group commit by draining what
 *       queued during the previous commit);
 *   <li>{@code outbox}: the {@link LedgerWriter} onto the local {@link Outbox} alone (append, one
 *       {@code force} per group): the cost if the outbox were the commit point;
 *   <li>{@code pg-measured}: {@code pg-nolinger} with a {@link MeasuredBatch} committed with every
 *       batch, as the server's store does (the records and the measured time in one commit).
 *   <li>{@code local-log}: the {@link LedgerWriter} onto the preallocated {@link CommitLog}
 *       (overwrite + {@code fdatasync} per group), records only;
 *   <li>{@code local-measured}: {@code local-log} with a {@link MeasuredBatch} in every group, as
 *       {@code pg-measured}: the candidate local commit point.
 * </ul>
 *
 * {@code --variants a,b} runs only those (default: all six); running the same variant on two builds
 * of the store, one after the other, compares them.
 *
 * <p>Each variant runs with 1 publisher (sequential: publish, wait, publish) and with {@code
 * --threads} publishers at once (closed loop), reporting p50 / p99 latency and records/s.
 *
 * <pre>
 * ./mvnw -o -q -pl billing-api -am test-compile
 * ./mvnw -o -q -pl billing-api dependency:build-classpath -Dmdep.includeScope=test \
 *     -Dmdep.outputFile=target/test-classpath.txt
 * java -cp billing-api/target/test-classes:billing-api/target/classes:metering/target/classes:\
 * $(cat billing-api/target/test-classpath.txt) io.gpumeter.billing.ledger.CommitPointLatency \
 *     [--seconds 5] [--rounds 3] [--threads 32] [--variants pg-nolinger,pg-measured]
 * </pre>
 */
public final class CommitPointLatency {
  private CommitPointLatency() {}

  private static final AtomicLong IDS = new AtomicLong();

  public static void main(String[] args) throws Exception {
    int seconds = 5;
    int rounds = 3;
    int threads = 32;
    List<String> only =
        List.of(
            "pg-linger2ms", "pg-nolinger", "outbox", "pg-measured", "local-log", "local-measured");
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--seconds" -> seconds = Integer.parseInt(args[++i]);
        case "--rounds" -> rounds = Integer.parseInt(args[++i]);
        case "--threads" -> threads = Integer.parseInt(args[++i]);
        case "--variants" -> only = List.of(args[++i].split(","));
        default -> throw new IllegalArgumentException("unknown argument " + args[i]);
      }
    }
    Path dir = Files.createTempDirectory("commit-point");
    System.out.printf(
        Locale.ROOT,
        "CommitPointLatency: %d s per run, %d rounds, 1 and %d publishers, %d cores, %s%n",
        seconds,
        rounds,
        threads,
        Runtime.getRuntime().availableProcessors(),
        dir);
    try (Database db = Database.start(TestSupport.embedded(dir.resolve("pg")))) {
      try (var c = db.dataSource().getConnection();
          var st = c.createStatement();
          var rs = st.executeQuery("SHOW fsync")) {
        rs.next();
        System.out.println("PostgreSQL fsync = " + rs.getString(1));
      }
      LedgerConfig base = LedgerConfig.custom().durability(Durability.DURABLE).build();
      List<Variant> all =
          List.of(
              new Variant(
                  "pg-linger2ms",
                  () -> new JdbcLedgerStore(db.dataSource()),
                  base.withLinger(Duration.ofMillis(2))),
              new Variant(
                  "pg-nolinger",
                  () -> new JdbcLedgerStore(db.dataSource()),
                  base.withLinger(Duration.ZERO)),
              new Variant(
                  "outbox",
                  () -> new OutboxOnly(Outbox.open(dir.resolve("outbox"), 1L << 30, 8L << 20)),
                  base.withLinger(Duration.ZERO)),
              new Variant(
                  "pg-measured",
                  () -> new WithMeasured(new JdbcLedgerStore(db.dataSource())),
                  base.withLinger(Duration.ZERO)),
              new Variant(
                  "local-log",
                  () -> new LogOnly(CommitLog.open(dir.resolve("log"), 16L << 20), false),
                  base.withLinger(Duration.ZERO)),
              new Variant(
                  "local-measured",
                  () -> new LogOnly(CommitLog.open(dir.resolve("log-m"), 16L << 20), true),
                  base.withLinger(Duration.ZERO)));
      List<String> names = only;
      List<Variant> variants = all.stream().filter(v -> names.contains(v.name)).toList();
      if (variants.size() != only.size()) {
        throw new IllegalArgumentException("unknown variant in " + only);
      }
      // warm-up: JIT, connections, the first segment
      for (Variant v : variants) {
        run(v, 1, 1);
      }
      for (int round = 1; round <= rounds; round++) {
        for (int n : new int[] {1, threads}) {
          for (Variant v : variants) {
            Result r = run(v, n, seconds);
            System.out.printf(
                Locale.ROOT,
                "round %d %-13s publishers %2d  records %7d (%8.0f/s)  p50 %7.3f ms  p90 %7.3f ms"
                    + "  p99 %7.3f ms  batches %6d (mean %.1f)%n",
                round,
                v.name,
                n,
                r.count,
                r.count / (double) seconds,
                r.p50 / 1e6,
                r.p90 / 1e6,
                r.p99 / 1e6,
                r.batches,
                r.count / (double) Math.max(1, r.batches));
          }
        }
      }
    }
  }

  private record Variant(
      String name, java.util.function.Supplier<LedgerStore> store, LedgerConfig config) {}

  private record Result(int count, long batches, long p50, long p90, long p99) {}

  private static Result run(Variant v, int publishers, int seconds) throws Exception {
    LedgerStore store = v.store.get();
    LedgerWriter writer = new LedgerWriter(store, v.config);
    long end = System.nanoTime() + Duration.ofSeconds(seconds).toNanos();
    List<long[]> samples = new ArrayList<>();
    int[] counts = new int[publishers];
    List<Thread> ts = new ArrayList<>();
    AtomicLong failures = new AtomicLong();
    for (int t = 0; t < publishers; t++) {
      long[] s = new long[200_000];
      samples.add(s);
      int id = t;
      Thread th =
          new Thread(
              () -> {
                int n = 0;
                while (n < s.length) {
                  long t0 = System.nanoTime();
                  if (t0 >= end) {
                    break;
                  }
                  CompletableFuture<Void> f = writer.publish(record(v.name + "-" + id));
                  try {
                    f.join();
                  } catch (RuntimeException e) {
                    failures.incrementAndGet();
                    continue;
                  }
                  s[n++] = System.nanoTime() - t0;
                }
                counts[id] = n;
              });
      ts.add(th);
      th.start();
    }
    for (Thread th : ts) {
      th.join();
    }
    writer.close();
    if (store instanceof OutboxOnly o) {
      o.outbox.close();
    }
    if (store instanceof LogOnly l) {
      l.log.close();
      l.log.shipped(Long.MAX_VALUE); // closed: nothing in use, every segment goes
    }
    if (failures.get() > 0) {
      throw new IllegalStateException(v.name + ": " + failures.get() + " publishes failed");
    }
    int total = Arrays.stream(counts).sum();
    long[] all = new long[total];
    int at = 0;
    for (int t = 0; t < publishers; t++) {
      System.arraycopy(samples.get(t), 0, all, at, counts[t]);
      at += counts[t];
    }
    Arrays.sort(all);
    Function<Double, Long> pct =
        p ->
            all.length == 0
                ? 0
                : all[Math.min(all.length - 1, (int) Math.ceil(p * all.length) - 1)];
    return new Result(
        total, writer.stats().batches(), pct.apply(0.5), pct.apply(0.9), pct.apply(0.99));
  }

  private static UsageRecord record(String prefix) {
    return TestSupport.record(prefix + "-" + IDS.incrementAndGet(), 7, Instant.now());
  }

  /**
   * The server's write: every batch carries the measured time of its steps ({@link MeasuredBatch},
   * one delta for the batch's device time and its accrual), committed with the records.
   */
  private static final class WithMeasured implements LedgerStore {
    final JdbcLedgerStore jdbc;
    final UUID owner = UUID.randomUUID();
    final UUID instance = UUID.randomUUID();

    WithMeasured(JdbcLedgerStore jdbc) {
      this.jdbc = jdbc;
    }

    @Override
    public int write(List<UsageRecord> records) throws LedgerWriteException {
      long minute = Math.floorDiv(Instant.now().getEpochSecond(), 60);
      long ns = 0;
      for (UsageRecord r : records) {
        ns += r.deviceNs();
      }
      MeasuredDelta d =
          new MeasuredDelta(minute, "toy", TestSupport.CPU.device(), ns, ns, 0, records.size());
      return jdbc.write(records, MeasuredBatch.of(owner, instance, List.of(d), records));
    }
  }

  /** The outbox as the only store: what a local commit point would cost per group. */
  private static final class OutboxOnly implements LedgerStore {
    final Outbox outbox;

    OutboxOnly(Outbox outbox) {
      this.outbox = outbox;
    }

    @Override
    public int write(List<UsageRecord> records) throws LedgerWriteException {
      try {
        outbox.append(records).join();
        return records.size();
      } catch (RuntimeException e) {
        throw new LedgerWriteException("outbox append failed", e, false);
      }
    }
  }

  /** The local commit log as the only store: the candidate commit point, per group. */
  private static final class LogOnly implements LedgerStore {
    final CommitLog log;
    final boolean measured;
    final UUID owner = UUID.randomUUID();
    final UUID instance = UUID.randomUUID();

    LogOnly(CommitLog log, boolean measured) {
      this.log = log;
      this.measured = measured;
      // create (preallocate) the first segment before the clock starts
      log.commit(List.of(), null).join();
    }

    @Override
    public int write(List<UsageRecord> records) throws LedgerWriteException {
      MeasuredBatch batch = null;
      if (measured) {
        long minute = Math.floorDiv(Instant.now().getEpochSecond(), 60);
        long ns = 0;
        for (UsageRecord r : records) {
          ns += r.deviceNs();
        }
        batch =
            MeasuredBatch.of(
                owner,
                instance,
                List.of(
                    new MeasuredDelta(
                        minute, "toy", TestSupport.CPU.device(), ns, ns, 0, records.size())),
                records);
      }
      try {
        log.commit(records, batch).join();
        return records.size();
      } catch (RuntimeException e) {
        throw new LedgerWriteException("commit log write failed", e, false);
      }
    }
  }
}
