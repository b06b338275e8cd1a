package io.gpumeter.benchmarks.ledger;

import com.zaxxer.hikari.HikariDataSource;
import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.Durability;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.ledger.JdbcLedgerStore;
import io.gpumeter.billing.ledger.LedgerWriter;
import io.gpumeter.metering.UsageRecord;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;

/**
 * The ledger's throughput curve over writer threads ({@code ledger.writers}) and ledger instances
 * ("servers": each its own {@link LedgerWriter} and connection pool, as separate server processes
 * would have; here in one JVM) into one embedded PostgreSQL, with the database's CPU share.
 *
 * <p>Each point publishes {@code records} prebuilt records (plus 1% re-published ids) in FAST mode
 * across its ledgers, then closes them (close waits until everything is committed): records/s is
 * unique records over that time. The database's CPU is read from /proc: the postmaster's own and
 * reaped children's times plus every live backend's, before and after, with the pools still open.
 * After every point the ledger is checked exact: each id stored once, and every hourly rollup row
 * equal to the sums of its raw rows (an EXCEPT both ways over the whole table).
 *
 * <p>Run: {@code java -cp <benchmarks classpath> io.gpumeter.benchmarks.ledger.LedgerWritersCurve
 * [records] [batch] [binary cache folder] [budget seconds]}; prints a Markdown table
 * (benchmarks/RESULTS.md, "Ledger writers"). The 1, 2 and 4 writer points (one ledger) come first;
 * a point is started only while the run, at the pace of the point before, stays within the budget
 * counted from the database being up (default 200 s, so that with the database's first start the
 * run fits in 5 minutes): points left out are listed as such, never guessed.
 */
public final class LedgerWritersCurve {
  private LedgerWritersCurve() {}

  /** {servers, writers each}. */
  private static final int[][] POINTS = {{1, 1}, {1, 2}, {1, 4}, {2, 2}, {4, 1}, {2, 4}};

  public static void main(String[] args) throws Exception {
    int records = args.length > 0 ? Integer.parseInt(args[0]) : 200_000;
    int batch = args.length > 1 ? Integer.parseInt(args[1]) : 1_000;
    LedgerThroughput.quietLogs();
    Path dir = Files.createTempDirectory("ledger-writers");
    // where the embedded PostgreSQL's binaries are unpacked (repacked once to run as root)
    Path binaries = args.length > 2 ? Path.of(args[2]) : dir;
    long budgetNs = Duration.ofSeconds(args.length > 3 ? Long.parseLong(args[3]) : 200).toNanos();
    int cpus = Runtime.getRuntime().availableProcessors();
    System.out.printf(
        "# LedgerWritersCurve: %d records per point, batches of %d, %d CPUs, load %s, %s, java %s%n%n",
        records, batch, cpus, loadAverage(), Instant.now(), System.getProperty("java.version"));
    long hz = clockTicks();
    try (Database db =
        Database.start(
            DatabaseConfig.builder()
                .dataDirectory(dir.resolve("pg"))
                .binaryCacheDirectory(binaries)
                .embeddedWatchdogInterval(Duration.ZERO)
                .build())) {
      long postmaster = postmasterPid(dir);
      // The budget counts from here: unpacking the binaries the first time and initdb vary more.
      long started = System.nanoTime();
      System.out.println(
          "| servers | writers each | connections | records | seconds | records/s | vs 1 × 1 |"
              + " database CPU share of the machine | database CPU µs/record | JVM CPU µs/record |"
              + " exact |");
      System.out.println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
      int round = 0;
      double firstRate = 0;
      long lastPointNs = 0;
      List<String> left = new ArrayList<>();
      for (int[] point : POINTS) {
        round++;
        int servers = point[0];
        int writers = point[1];
        long elapsed = System.nanoTime() - started;
        if (elapsed + lastPointNs * 3 / 2 > budgetNs) {
          left.add(servers + " × " + writers);
          continue;
        }
        long pointStart = System.nanoTime();
        List<HikariDataSource> pools = new ArrayList<>();
        List<LedgerWriter> ledgers = new ArrayList<>();
        try {
          for (int s = 0; s < servers; s++) {
            HikariDataSource ds = new HikariDataSource();
            ds.setJdbcUrl(db.jdbcUrl());
            ds.setUsername("gpumeter_app"); // the server's role, as a server would connect
            ds.setPassword(
                Files.readString(dir.resolve("pg").resolve("gpumeter-app.password")).strip());
            ds.setMaximumPoolSize(writers);
            ds.setMinimumIdle(writers);
            ds.setPoolName("curve-" + round + "-" + s);
            pools.add(ds);
            warm(ds, writers);
          }
          String prefix = "c" + round;
          List<UsageRecord> rs = LedgerThroughput.records(prefix, records);
          int dups = records / 100;
          for (int i = 0; i < dups; i++) {
            rs.add(rs.get(i * 97 % records)); // the same id again, later
          }
          for (HikariDataSource ds : pools) {
            ledgers.add(
                new LedgerWriter(
                    new JdbcLedgerStore(ds),
                    LedgerConfig.custom()
                        .durability(Durability.FAST)
                        .writers(writers)
                        .maxBatchSize(batch)
                        .queueCapacity(rs.size() + 1)
                        .closeTimeout(Duration.ofMinutes(10)) // close = wait for all commits
                        .build()));
          }
          long dbBefore = databaseTicks(postmaster);
          long jvmBefore = jvmCpuNanos();
          long t0 = System.nanoTime();
          for (int i = 0; i < rs.size(); i++) {
            ledgers.get(i % servers).publish(rs.get(i));
          }
          List<Thread> closers = new ArrayList<>();
          for (LedgerWriter l : ledgers) {
            Thread t = new Thread(l::close);
            t.start();
            closers.add(t);
          }
          for (Thread t : closers) {
            t.join();
          }
          long wall = System.nanoTime() - t0;
          long dbTicks = databaseTicks(postmaster) - dbBefore;
          long jvm = jvmCpuNanos() - jvmBefore;
          double secs = wall / 1e9;
          double dbCpuSecs = (double) dbTicks / hz;
          String exact = exact(pools.get(0), prefix, records);
          double rate = records / secs;
          if (firstRate == 0) {
            firstRate = rate;
          }
          System.out.printf(
              Locale.ROOT,
              "| %d | %d | %d | %d | %.2f | %.0f | %.2f | %.0f%% | %.1f | %.1f | %s |%n",
              servers,
              writers,
              servers * writers,
              records,
              secs,
              rate,
              rate / firstRate,
              100.0 * dbCpuSecs / secs / cpus,
              dbCpuSecs * 1e6 / records,
              jvm / 1e3 / records,
              exact);
        } finally {
          for (LedgerWriter l : ledgers) {
            l.close();
          }
          for (HikariDataSource ds : pools) {
            ds.close();
          }
        }
        lastPointNs = System.nanoTime() - pointStart;
      }
      if (!left.isEmpty()) {
        System.out.printf(
            "%nnot run, to stay within the %d s budget: %s (servers × writers each)%n",
            Duration.ofNanos(budgetNs).toSeconds(), String.join(", ", left));
      }
      System.out.printf(
          Locale.ROOT,
          "%npoints %.0f s; load after: %s%n",
          (System.nanoTime() - started) / 1e9,
          loadAverage());
    }
  }

  /** Opens every connection of the pool before the clock starts. */
  private static void warm(HikariDataSource ds, int n) throws SQLException {
    List<Connection> held = new ArrayList<>();
    try {
      for (int i = 0; i < n; i++) {
        held.add(ds.getConnection());
      }
    } finally {
      for (Connection c : held) {
        c.close();
      }
    }
  }

  /** "yes", or what is wrong: ids not stored exactly once, or rollups unequal to the raw rows. */
  private static String exact(HikariDataSource ds, String prefix, int unique) throws SQLException {
    try (Connection c = ds.getConnection()) {
      try (PreparedStatement ps =
          c.prepareStatement(
              "SELECT count(*), count(DISTINCT request_id) FROM usage_records"
                  + " WHERE request_id LIKE ?")) {
        ps.setString(1, prefix + "-%");
        try (ResultSet r = ps.executeQuery()) {
          r.next();
          if (r.getLong(1) != unique || r.getLong(2) != unique) {
            return "NO: " + r.getLong(1) + " rows, " + r.getLong(2) + " ids, " + unique + " sent";
          }
        }
      }
      String raw =
          "SELECT date_trunc('hour', finished_at, 'UTC') AS hour, api_key_id, model, device,"
              + " count(*)::numeric, sum(device_ns)::numeric, sum(prefill_ns)::numeric,"
              + " sum(decode_ns)::numeric, sum(prompt_tokens)::numeric,"
              + " sum(completion_tokens)::numeric FROM usage_records"
              + " GROUP BY 1, api_key_id, model, device";
      String rolled =
          "SELECT hour, api_key_id, model, device, requests::numeric, device_ns::numeric,"
              + " prefill_ns::numeric, decode_ns::numeric, prompt_tokens::numeric,"
              + " completion_tokens::numeric FROM usage_hourly";
      try (Statement s = c.createStatement();
          ResultSet r =
              s.executeQuery(
                  "SELECT (SELECT count(*) FROM (("
                      + raw
                      + ") EXCEPT ("
                      + rolled
                      + ")) a), (SELECT count(*) FROM (("
                      + rolled
                      + ") EXCEPT ("
                      + raw
                      + ")) b)")) {
        r.next();
        if (r.getLong(1) != 0 || r.getLong(2) != 0) {
          return "NO: " + r.getLong(1) + "/" + r.getLong(2) + " rollup rows differ";
        }
      }
    }
    return "yes";
  }

  /** The embedded postmaster: the process started with this run's data folder. */
  private static long postmasterPid(Path dir) throws IOException {
    String needle = dir.toString();
    long found = -1;
    try (Stream<Path> procs = Files.list(Path.of("/proc"))) {
      for (Path p : (Iterable<Path>) procs::iterator) {
        String name = p.getFileName().toString();
        if (!name.chars().allMatch(Character::isDigit)) {
          continue;
        }
        try {
          String cmd =
              new String(Files.readAllBytes(p.resolve("cmdline")), StandardCharsets.UTF_8)
                  .replace('\0', ' ');
          if (cmd.contains("postgres") && cmd.contains(needle)) {
            long pid = Long.parseLong(name);
            if (found < 0 || pid < found) {
              found = pid;
            }
          }
        } catch (IOException gone) {
          // exited while listed
        }
      }
    }
    if (found < 0) {
      throw new IllegalStateException("no postgres process started with " + needle);
    }
    return found;
  }

  /**
   * The database's CPU so far, in clock ticks: the postmaster's utime + stime + the reaped
   * children's (cutime + cstime), plus every live child's utime + stime.
   */
  private static long databaseTicks(long postmaster) throws IOException {
    long total = 0;
    try (Stream<Path> procs = Files.list(Path.of("/proc"))) {
      for (Path p : (Iterable<Path>) procs::iterator) {
        String name = p.getFileName().toString();
        if (!name.chars().allMatch(Character::isDigit)) {
          continue;
        }
        long[] f;
        try {
          f = stat(p);
        } catch (IOException | RuntimeException gone) {
          continue;
        }
        long pid = Long.parseLong(name);
        if (pid == postmaster) {
          total += f[1] + f[2] + f[3] + f[4];
        } else if (f[0] == postmaster) {
          total += f[1] + f[2];
        }
      }
    }
    return total;
  }

  /** {ppid, utime, stime, cutime, cstime} from /proc/PID/stat. */
  private static long[] stat(Path proc) throws IOException {
    String stat = Files.readString(proc.resolve("stat"));
    String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
    return new long[] {
      Long.parseLong(f[1]),
      Long.parseLong(f[11]),
      Long.parseLong(f[12]),
      Long.parseLong(f[13]),
      Long.parseLong(f[14])
    };
  }

  private static long jvmCpuNanos() {
    return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
        .getProcessCpuTime();
  }

  private static long clockTicks() throws IOException, InterruptedException {
    Process p = new ProcessBuilder("getconf", "CLK_TCK").redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
    p.waitFor();
    return Long.parseLong(out);
  }

  private static String loadAverage() throws IOException {
    String[] f = Files.readString(Path.of("/proc/loadavg")).split(" ");
    return f[0] + " " + f[1] + " " + f[2];
  }
}
