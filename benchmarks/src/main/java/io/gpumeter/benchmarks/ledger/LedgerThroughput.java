package io.gpumeter.benchmarks.ledger;

import com.zaxxer.hikari.HikariDataSource;
import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.Durability;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.ledger.FailoverLedgerStore;
import io.gpumeter.billing.ledger.JdbcLedgerStore;
import io.gpumeter.billing.ledger.LedgerStore;
import io.gpumeter.billing.ledger.LedgerWriteException;
import io.gpumeter.billing.ledger.LedgerWriter;
import io.gpumeter.billing.ledger.Outbox;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;

/**
 * Ledger throughput and publish latency against a real embedded PostgreSQL on this machine.
 *
 * <ol>
 *   <li><b>Store</b>: records/s written by {@link JdbcLedgerStore} over <b>one connection</b>, in
 *       batches, for each insert method: {@code UNNEST} (one statement, one array per column) and
 *       {@code COPY} (COPY into a temporary staging table, then the same statement). Every batch
 *       claims its request ids, inserts the raw rows into the partitioned table and upserts the
 *       hourly rollups, as in production.
 *   <li><b>Writer</b>: records/s through {@link LedgerWriter} (queue, one writer thread, batches up
 *       to the batch size) onto the same one-connection store: publish everything, then close
 *       (which waits until everything is committed).
 *   <li><b>Latency</b>: publish-to-future-completion at a fixed offered rate, through the whole
 *       write path (writer → breaker/retry → PostgreSQL | outbox), DURABLE vs FAST, and DURABLE
 *       with the database down (every batch fsynced to the outbox).
 * </ol>
 *
 * <p>Run (after {@code ./mvnw -o -q -pl billing-api install -DskipTests}):
 *
 * <pre>
 * java -cp benchmarks/target/classes:$(cat /tmp/billing-cp.txt):billing-api/target/classes \
 *   io.gpumeter.benchmarks.ledger.LedgerThroughput [records] [batch]
 * </pre>
 *
 * (see "Ledger throughput" in benchmarks/RESULTS.md for how the classpath was built). Prints
 * Markdown tables.
 */
public final class LedgerThroughput {
  private static final TimerInfo GPU =
      new TimerInfo("cuda-event", "cuda:0", "NVIDIA H100 80GB HBM3", "GPU-5c2a", "550.54", "12.4");

  private LedgerThroughput() {}

  public static void main(String[] args) throws Exception {
    int records = args.length > 0 ? Integer.parseInt(args[0]) : 200_000;
    int batch = args.length > 1 ? Integer.parseInt(args[1]) : 1_000;
    quietLogs();
    Path dir = Files.createTempDirectory("ledger-bench");
    System.out.printf(
        "# LedgerThroughput: %d records, batches of %d, %d CPUs, %s, java %s%n%n",
        records,
        batch,
        Runtime.getRuntime().availableProcessors(),
        Instant.now(),
        System.getProperty("java.version"));
    try (Database db =
        Database.start(
            DatabaseConfig.builder()
                .dataDirectory(dir.resolve("pg"))
                .embeddedWatchdogInterval(Duration.ZERO)
                .build())) {
      try (HikariDataSource one = new HikariDataSource()) {
        one.setJdbcUrl(db.jdbcUrl());
        one.setMaximumPoolSize(1);
        one.setPoolName("bench-one");

        long backend = backendPid(one);
        ThreadMXBean threads = ManagementFactory.getThreadMXBean();
        System.out.println("## Store: one connection, batches written back to back");
        System.out.println();
        System.out.println(
            "| method | batch | round | records | seconds | records/s | server CPU µs/record |"
                + " client CPU µs/record | records per server CPU-second |");
        System.out.println("|---|---:|---|---:|---:|---:|---:|---:|---:|");
        int[][] plan = {{batch, 3}, {100, 2}, {10, 2}}; // {batch size, rounds}
        for (int[] step : plan) {
          int size = step[0];
          int n = size >= batch ? records : Math.max(10_000, records * size / batch * 5);
          for (int round = 1; round <= step[1]; round++) {
            for (JdbcLedgerStore.Method m : JdbcLedgerStore.Method.values()) {
              storeRound(one, backend, threads, m, size, round, n);
            }
          }
        }
        System.out.println();

        System.out.println(
            "## Writer: LedgerWriter (FAST publish of all records, then close = all committed)");
        System.out.println();
        System.out.println("| method | records | seconds | records/s | batches | mean batch |");
        System.out.println("|---|---:|---:|---:|---:|---:|");
        for (JdbcLedgerStore.Method m : JdbcLedgerStore.Method.values()) {
          JdbcLedgerStore store = new JdbcLedgerStore(one, m);
          List<UsageRecord> rs = records("wr" + m, records);
          LedgerConfig cfg =
              LedgerConfig.custom()
                  .durability(Durability.FAST)
                  .maxBatchSize(Math.min(batch, 10_000))
                  .queueCapacity(records + 1)
                  .closeTimeout(Duration.ofMinutes(5))
                  .build();
          long t0 = System.nanoTime();
          LedgerWriter w = new LedgerWriter(store, cfg);
          for (UsageRecord r : rs) {
            w.publish(r);
          }
          w.close();
          double s = (System.nanoTime() - t0) / 1e9;
          long batches = w.stats().batches();
          System.out.printf(
              "| %s | %d | %.2f | %,.0f | %d | %.0f |%n",
              m, records, s, records / s, batches, (double) records / batches);
          if (w.stats().stored() != records) {
            throw new IllegalStateException("stored " + w.stats() + ", expected " + records);
          }
        }
        System.out.println();
      }

      System.out.println(
          "## Publish latency: publish → future complete, whole write path (ledger pool)");
      System.out.println();
      System.out.println(
          "| mode | database | offered/s | records | p50 µs | p99 µs | p99.9 µs | max µs |");
      System.out.println("|---|---|---:|---:|---:|---:|---:|---:|");
      int[] rates = {1_000, 10_000};
      for (int rate : rates) {
        for (Durability d : Durability.values()) {
          latency(db, dir, d, true, rate, Duration.ofSeconds(4));
        }
        latency(db, dir, Durability.DURABLE, false, rate, Duration.ofSeconds(4));
      }
    }
  }

  static void storeRound(
      javax.sql.DataSource one,
      long backend,
      ThreadMXBean threads,
      JdbcLedgerStore.Method m,
      int size,
      int round,
      int n)
      throws Exception {
    JdbcLedgerStore store = new JdbcLedgerStore(one, m);
    writeAll(store, records("w" + size + "-" + round + m, Math.min(n, 20_000)), size);
    List<UsageRecord> rs = records("s" + size + "-" + round + m, n);
    long cpu0 = cpuTicks(backend);
    long client0 = threads.getCurrentThreadCpuTime();
    long t0 = System.nanoTime();
    writeAll(store, rs, size);
    double s = (System.nanoTime() - t0) / 1e9;
    double serverUs = (cpuTicks(backend) - cpu0) * 1e4 / n; // ticks are 10 ms
    double clientUs = (threads.getCurrentThreadCpuTime() - client0) / 1e3 / n;
    System.out.printf(
        "| %s | %d | %d | %d | %.2f | %,.0f | %.1f | %.1f | %,.0f |%n",
        m, size, round, n, s, n / s, serverUs, clientUs, 1e6 / serverUs);
  }

  static long backendPid(javax.sql.DataSource ds) throws java.sql.SQLException {
    try (java.sql.Connection c = ds.getConnection();
        java.sql.Statement st = c.createStatement();
        java.sql.ResultSet rs = st.executeQuery("SELECT pg_backend_pid()")) {
      rs.next();
      return rs.getLong(1);
    }
  }

  /** utime + stime of a process, in clock ticks (USER_HZ = 100 on Linux). */
  static long cpuTicks(long pid) throws java.io.IOException {
    String stat = Files.readString(Path.of("/proc", Long.toString(pid), "stat"));
    String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
    return Long.parseLong(f[11]) + Long.parseLong(f[12]);
  }

  static void writeAll(JdbcLedgerStore store, List<UsageRecord> rs, int batch)
      throws LedgerWriteException {
    for (int i = 0; i < rs.size(); i += batch) {
      int n = store.write(rs.subList(i, Math.min(rs.size(), i + batch)));
      if (n != Math.min(batch, rs.size() - i)) {
        throw new IllegalStateException("a batch stored " + n + " new records");
      }
    }
  }

  /**
   * Records as the server makes them: 200 keys, 2 models, a few seconds apart within recent hours,
   * ids like the server's (prefix + counter).
   */
  static List<UsageRecord> records(String prefix, int n) {
    Instant base = Instant.now().truncatedTo(ChronoUnit.HOURS).minus(2, ChronoUnit.HOURS);
    List<UsageRecord> out = new ArrayList<>(n);
    for (int i = 0; i < n; i++) {
      long key = 1 + i % 200;
      long prefill = 150_000 + i % 1000;
      long decode = 2_000_000 + i % 7919;
      Instant finished = base.plusNanos(i * 37_000_000L % 7_200_000_000_000L);
      out.add(
          new UsageRecord(
              prefix + "-" + Integer.toHexString(i) + "-c0ffee",
              key,
              1_000 + key,
              i % 2 == 0 ? "llama-3-8b" : "mistral-7b",
              GPU,
              "linear(p=1,d=1,c=0)",
              prefill + decode,
              prefill,
              decode,
              100 + i % 900,
              20 + i % 300,
              50_000,
              21 + i % 300,
              UsageStatus.OK,
              finished.minusMillis(800),
              finished));
    }
    return out;
  }

  /** A database that is down: every write fails as a refused connection would. */
  static final class DownStore implements LedgerStore {
    @Override
    public int write(List<UsageRecord> records) throws LedgerWriteException {
      throw new LedgerWriteException(
          "could not store",
          new java.sql.SQLTransientConnectionException("refused", "08001"),
          false);
    }
  }

  static void latency(Database db, Path dir, Durability mode, boolean up, int rate, Duration length)
      throws Exception {
    Path outboxDir = dir.resolve("outbox-" + mode + "-" + up + "-" + rate);
    LedgerConfig cfg =
        LedgerConfig.custom()
            .durability(mode)
            .breakerOpenWait(Duration.ofMinutes(10)) // stays open when down
            .replayInterval(Duration.ofMinutes(10))
            .build();
    int n = (int) (rate * length.toSeconds());
    List<UsageRecord> rs = records("lat-" + mode + "-" + up + "-" + rate, n);
    long[] latencyNs = new long[n];
    JdbcLedgerStore jdbc = new JdbcLedgerStore(db.ledgerDataSource()); // the default method
    LedgerStore database = up ? jdbc : new DownStore();
    // The write path only: no replayer (with the database up the outbox stays empty; with it down
    // the replayer would only probe in the background, which the latencies below do not include).
    try (Outbox outbox = Outbox.open(outboxDir, 1L << 30, 8L << 20)) {
      FailoverLedgerStore store = new FailoverLedgerStore(database, outbox, cfg);
      if (!up) {
        // Trip the breaker first: the steady state is measured, not the failover (the first
        // batch after the database dies waits for the retries, reported separately).
        long f0 = System.nanoTime();
        store.write(records("trip-" + rate, 1));
        System.err.printf(
            "failover: first batch durable in the outbox after %.0f ms (breaker %s)%n",
            (System.nanoTime() - f0) / 1e6, store.breakerState());
      }
      LedgerWriter w = new LedgerWriter(store, cfg);
      List<CompletableFuture<Void>> fs = new ArrayList<>(n);
      long start = System.nanoTime();
      long interval = 1_000_000_000L / rate;
      for (int i = 0; i < n; i++) {
        long due = start + i * interval;
        long wait;
        while ((wait = due - System.nanoTime()) > 0) {
          if (wait > 50_000) {
            LockSupport.parkNanos(wait - 20_000);
          } else {
            Thread.onSpinWait();
          }
        }
        int idx = i;
        long t0 = System.nanoTime();
        fs.add(
            w.publish(rs.get(i)).whenComplete((v, e) -> latencyNs[idx] = System.nanoTime() - t0));
      }
      CompletableFuture.allOf(fs.toArray(CompletableFuture[]::new)).get(5, TimeUnit.MINUTES);
      w.close();
      Thread.sleep(50); // whenComplete callbacks of the last futures
    }
    long[] sorted = latencyNs.clone();
    Arrays.sort(sorted);
    System.out.printf(
        Locale.ROOT,
        "| %s | %s | %,d | %d | %.0f | %.0f | %.0f | %.0f |%n",
        mode,
        up ? "up" : "down (outbox)",
        rate,
        n,
        sorted[(int) (n * 0.50)] / 1e3,
        sorted[(int) (n * 0.99)] / 1e3,
        sorted[Math.min(n - 1, (int) (n * 0.999))] / 1e3,
        sorted[n - 1] / 1e3);
  }

  /** Logback defaults to DEBUG on the console; keep the tables readable. */
  static void quietLogs() {
    try {
      Object ctx = org.slf4j.LoggerFactory.getILoggerFactory();
      Object root = ctx.getClass().getMethod("getLogger", String.class).invoke(ctx, "ROOT");
      Class<?> level = Class.forName("ch.qos.logback.classic.Level");
      root.getClass().getMethod("setLevel", level).invoke(root, level.getField("WARN").get(null));
    } catch (ReflectiveOperationException | RuntimeException e) {
      // another binding: its own configuration applies
    }
  }
}
