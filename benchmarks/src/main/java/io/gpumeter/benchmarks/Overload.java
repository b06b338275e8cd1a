package io.gpumeter.benchmarks;

import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.StoredUsage;
import io.gpumeter.billing.UsageTotals;
import io.gpumeter.billing.usage.UsageQueries;
import io.gpumeter.server.GpumeterServer;
import io.gpumeter.server.ServerConfig;
import java.io.IOException;
import java.lang.management.BufferPoolMXBean;
import java.lang.management.GarbageCollectorMXBean;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.time.Instant;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeParseException;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.atomic.LongAdder;
import java.util.concurrent.locks.LockSupport;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * Overload tool (a plain main, not JMH; also run, shorter, by {@code OverloadTest}): the real
 * server with the demo model, an embedded PostgreSQL and the durable ledger, in this JVM, offered
 * twice the load it can serve.
 *
 * <p>Phases, on one server, with {@code scheduler.queue_capacity} = Q (default 128) and {@code
 * scheduler.max_running} = R (the server's default, 32):
 *
 * <ol>
 *   <li><b>warm-up</b>: R + min(R, Q) closed-loop clients (not counted).
 *   <li><b>unloaded</b>: one client, sequential requests: the latency of a request that waits for
 *       nothing.
 *   <li><b>capacity</b> C: R + min(R, Q) closed-loop clients (R running, the rest waiting, so the
 *       batch stays full and nothing is refused): completions per second, after a 1 s ramp.
 *   <li><b>overload</b>: open loop at {@code factor} × C (default 2) for the given time: arrival i
 *       is due at {@code t0 + i / rate}, whatever happened to the others (a client that waited for
 *       answers would slow down with the server and never overload it). Latency runs from the due
 *       time, so a late send counts against the server, not for it. Arrivals use the API keys in
 *       turn.
 * </ol>
 *
 * <p>The client: a fixed set of {@link HttpConnection}s, each with its own thread (blocking I/O),
 * opened before the first phase and kept to the end, 2 × (Q + R) of them: an admitted request holds
 * its connection for at most the time to serve Q + R requests, a refused one for microseconds, so
 * the connections never run out before the server's queue does (the lateness of sends is reported;
 * if the connections had run out it would show there). All recorded figures go into arrays
 * allocated before the first heap reading.
 *
 * <p>Checks (each failed one is a line in {@link Report#violations()}):
 *
 * <ul>
 *   <li><b>latency bound</b>: p50 and p99 of the admitted (200) requests during the overload ≤
 *       {@code slack × (Q + R) / D + unloaded p99}, where D is the rate at which admitted requests
 *       completed during the overload (the server shares the 2 cores with the refusals and the load
 *       generator, so D is below the capacity C measured before). (Q + R) / D is the time the
 *       server needs to serve everything it holds at once, so FIFO would bound the wait of a
 *       request admitted to a full queue plus its own generation by it; the slack (default 3)
 *       covers the per-key round robin, which lets a key with a backlog wait its turns behind keys
 *       that arrived later (measured: p99 about 2.6 × (Q + R) / D), and the unloaded p99 adds the
 *       fixed cost of one request (HTTP, key, durable commit). The bound does not grow with the
 *       length of the overload: that is what "bounded" means here.
 *   <li><b>refusals</b>: every response is a 200, or a 429 / 503 with a {@code Retry-After} header
 *       (delta-seconds or an HTTP date); anything else, and any connection closed without a
 *       response, is a violation. At least one refusal (else the server was not overloaded) and at
 *       least one admission.
 *   <li><b>the offered rate was kept</b>: the last arrival was sent no later than 5 % of the
 *       overload's length after its due time.
 *   <li><b>heap after GC</b> (this JVM: server and client; the smallest of three readings, each
 *       right after {@code System.gc()}, whose collections the collectors' counts must show) just
 *       before the overload and once every answer is in: within {@code heapTolerance} (default 10
 *       %) of each other. Direct buffers and the process's resident size are printed, not checked
 *       (libtorch's native memory is in there).
 *   <li><b>no charge lost</b>: every 200 of the overload has exactly one stored usage record with
 *       the device time its response reported, and no 429 / 503 has one (looked up by {@code
 *       x-request-id}); per API key, the ledger's totals ({@code /v1/usage}'s source) equal the sum
 *       of every 200 of the whole run, requests and nanoseconds.
 *   <li><b>reconciliation</b>: {@code GET /admin/reconcile} over the whole run (from the minute the
 *       server started to the minute after the last answer): every line's drift 0, exact (nothing
 *       straddles the range) and balanced (measured = charged + system).
 * </ul>
 *
 * <p>Usage: {@code java -cp benchmarks.jar io.gpumeter.benchmarks.Overload [--models DIR]
 * [--overload-s 30] [--factor 2] [--max-tokens 32] [--queue-capacity 128] [--warmup-s 5]
 * [--unloaded-s 5] [--capacity-s 10] [--keys 64] [--slack 3] [--heap-tolerance 0.10] [--data-dir
 * DIR] [--set key=value]...}; exit status 0 when every check passed, 1 otherwise.
 */
public final class Overload {
  private static final String USAGE =
      "usage: Overload [--models DIR] [--overload-s 30] [--factor 2] [--max-tokens 32]"
          + " [--queue-capacity 128] [--warmup-s 5] [--unloaded-s 5] [--capacity-s 10]"
          + " [--keys 64] [--slack 3] [--heap-tolerance 0.10] [--data-dir DIR]"
          + " [--set key=value]...";
  private static final byte[] DEVICE_TIME_NS = HttpConnection.jsonName("device_time_ns");
  private static final int READ_TIMEOUT_MS = 120_000;
  private static final Pattern LINE_DRIFT = Pattern.compile("\"drift_ns\":(-?[0-9]+)");
  private static final String ID_PREFIX = "cmpl-";
  private static final HexFormat HEX = HexFormat.of();

  /** What to run. {@link #defaults(Path)} is the 30 s run of RESULTS.md. */
  record Settings(
      Path modelsDir,
      Path dataDir,
      int maxTokens,
      double temperature,
      int queueCapacity,
      double factor,
      Duration warmup,
      Duration unloaded,
      Duration capacity,
      Duration overload,
      int keys,
      double slack,
      double heapTolerance,
      Map<String, String> serverSettings) {
    Settings {
      require(maxTokens >= 1, "max tokens must be >= 1, was %s", maxTokens);
      require(queueCapacity >= 1, "queue capacity must be >= 1, was %s", queueCapacity);
      require(factor > 1, "the overload factor must be > 1, was %s", factor);
      require(keys >= 1, "keys must be >= 1, was %s", keys);
      require(slack >= 1, "slack must be >= 1, was %s", slack);
      require(heapTolerance > 0, "heap tolerance must be > 0, was %s", heapTolerance);
      for (Duration d : List.of(warmup, unloaded, capacity, overload)) {
        require(!d.isNegative() && !d.isZero(), "phase lengths must be positive, was %s", d);
      }
      serverSettings = Map.copyOf(serverSettings);
    }

    static Settings defaults(Path modelsDir) {
      return new Settings(
          modelsDir,
          null,
          32,
          0.8,
          128,
          2.0,
          Duration.ofSeconds(5),
          Duration.ofSeconds(5),
          Duration.ofSeconds(10),
          Duration.ofSeconds(30),
          64,
          3.0,
          0.10,
          Map.of());
    }

    private static void require(boolean ok, String format, Object arg) {
      if (!ok) {
        throw new IllegalArgumentException(String.format(Locale.ROOT, format, arg));
      }
    }
  }

  /**
   * What a run measured, and which checks failed.
   *
   * @param latencyBoundNs the bound on admitted latency: {@code slack × (Q + R) / D + unloaded p99}
   * @param heapBefore heap used after GC just before the overload, bytes
   * @param heapAfter heap used after GC once every answer of the overload was in, bytes
   * @param refusals per kind ({@code "429 queue_full"}, ...), how many; a kind without {@code
   *     Retry-After} is suffixed {@code " WITHOUT Retry-After"}
   * @param driftNs the reconciliation's total drift over the run
   */
  record Report(
      int queueCapacity,
      int maxRunning,
      double unloadedP50Ns,
      double unloadedP99Ns,
      double capacityPerSecond,
      double capacityP50Ns,
      double capacityP99Ns,
      double offeredPerSecond,
      long offered,
      long admitted,
      long rejected,
      long rejectedWithoutRetryAfter,
      long otherStatus,
      long dropped,
      double overloadP50Ns,
      double overloadP99Ns,
      double overloadMaxNs,
      double rejectedP50Ns,
      double rejectedP99Ns,
      double latenessP99Ns,
      double latenessMaxNs,
      double latencyBoundNs,
      long heapBefore,
      long heapAfter,
      long chargesChecked,
      long chargesMissing,
      long chargesDuplicated,
      long chargesWrongDeviceTime,
      long chargedRefusals,
      long keysChecked,
      long keysWithWrongTotals,
      long driftNs,
      boolean reconcileExact,
      boolean reconcileBalanced,
      Map<String, Long> refusals,
      List<String> violations,
      String text) {

    double heapChange() {
      return (heapAfter - heapBefore) / (double) heapBefore;
    }
  }

  private final Settings settings;
  private final StringBuilder log = new StringBuilder();

  Overload(Settings settings) {
    this.settings = settings;
  }

  public static void main(String[] args) throws Exception {
    Map<String, String> opts = new LinkedHashMap<>();
    Map<String, String> set = new LinkedHashMap<>();
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      if (!a.startsWith("--") || i + 1 >= args.length) {
        System.err.println(USAGE);
        System.exit(2);
      }
      String v = args[++i];
      if (a.equals("--set")) {
        int eq = v.indexOf('=');
        if (eq <= 0) {
          System.err.println(USAGE);
          System.exit(2);
        }
        set.put(v.substring(0, eq), v.substring(eq + 1));
      } else {
        opts.put(a.substring(2), v);
      }
    }
    Settings d = Settings.defaults(Path.of(opts.getOrDefault("models", "models")));
    Settings s =
        new Settings(
            d.modelsDir(),
            opts.containsKey("data-dir") ? Path.of(opts.get("data-dir")) : null,
            Integer.parseInt(opts.getOrDefault("max-tokens", "" + d.maxTokens())),
            d.temperature(),
            Integer.parseInt(opts.getOrDefault("queue-capacity", "" + d.queueCapacity())),
            Double.parseDouble(opts.getOrDefault("factor", "" + d.factor())),
            seconds(opts.get("warmup-s"), d.warmup()),
            seconds(opts.get("unloaded-s"), d.unloaded()),
            seconds(opts.get("capacity-s"), d.capacity()),
            seconds(opts.get("overload-s"), d.overload()),
            Integer.parseInt(opts.getOrDefault("keys", "" + d.keys())),
            Double.parseDouble(opts.getOrDefault("slack", "" + d.slack())),
            Double.parseDouble(opts.getOrDefault("heap-tolerance", "" + d.heapTolerance())),
            set);
    Report r = new Overload(s).run();
    System.exit(r.violations().isEmpty() ? 0 : 1);
  }

  private static Duration seconds(String s, Duration otherwise) {
    return s == null ? otherwise : Duration.ofMillis((long) (Double.parseDouble(s) * 1000));
  }

  // ------------------------------------------------------------------ the run

  /** Runs every phase and check on a fresh server, prints as it goes, and returns the report. */
  Report run() throws Exception {
    long t0 = System.nanoTime();
    out(
        "Overload: %s, %d cores, JDK %s, load average %s, models %s",
        Instant.now(),
        Runtime.getRuntime().availableProcessors(),
        System.getProperty("java.version"),
        loadAverage(),
        settings.modelsDir().toAbsolutePath());
    Path data =
        settings.dataDir() != null
            ? Files.createDirectories(settings.dataDir())
            : Files.createTempDirectory("gpumeter-overload-");
    String adminToken = newAdminToken();
    Instant runStart = Instant.now();
    StepStats stats = new StepStats();
    ServerConfig.Builder config =
        ServerConfig.builder()
            .host("127.0.0.1")
            .port(0)
            .modelsDir(settings.modelsDir())
            .dataDir(data)
            .device("cpu")
            .set("ledger.durability", "durable")
            .set("scheduler.queue_capacity", Integer.toString(settings.queueCapacity()))
            .set("admin.token", adminToken);
    settings.serverSettings().forEach(config::set);
    GpumeterServer server = GpumeterServer.start(config.build(), stats);
    Started started = null;
    try {
      List<CreatedApiKey> keys = new ArrayList<>();
      for (int i = 0; i < settings.keys(); i++) {
        keys.add(server.billing().apiKeys().create("overload-client-" + i));
      }
      started =
          new Started(
              server,
              data,
              keys.stream().map(CreatedApiKey::plaintext).toList(),
              server.schedulers().get(0).modelName(),
              stats);
      int maxRunning = server.config().schedulerConfig().maxRunning();
      out(
          "server on port %d: scheduler.max_running %d, scheduler.queue_capacity %d, durable"
              + " ledger, max_tokens %d, %d API keys, started in %.1f s",
          server.port(),
          maxRunning,
          settings.queueCapacity(),
          settings.maxTokens(),
          keys.size(),
          (System.nanoTime() - t0) / 1e9);
      return new Run(started, keys, maxRunning, adminToken, runStart).go();
    } finally {
      if (started != null) {
        started.close();
      } else {
        server.close();
      }
      out("total run time %.0f s, load average %s", (System.nanoTime() - t0) / 1e9, loadAverage());
    }
  }

  /** One run's state: the server, the connections, and the expected ledger totals per key. */
  private final class Run {
    private final Started s;
    private final List<CreatedApiKey> keys;
    private final int maxRunning;
    private final String adminToken;
    private final Instant runStart;
    private final HttpConnection[] conns;
    private final byte[][] keyHeaders;
    private final AtomicLongArray expectedRequests;
    private final AtomicLongArray expectedNs;

    Run(Started s, List<CreatedApiKey> keys, int maxRunning, String adminToken, Instant runStart) {
      this.s = s;
      this.keys = keys;
      this.maxRunning = maxRunning;
      this.adminToken = adminToken;
      this.runStart = runStart;
      this.conns = new HttpConnection[2 * (settings.queueCapacity() + maxRunning)];
      this.keyHeaders = new byte[keys.size()][];
      for (int i = 0; i < keys.size(); i++) {
        keyHeaders[i] =
            ("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:"
                    + s.server().port()
                    + "\r\nAuthorization: Bearer "
                    + keys.get(i).plaintext()
                    + "\r\nContent-Type: application/json\r\nContent-Length: ")
                .getBytes(StandardCharsets.US_ASCII);
      }
      this.expectedRequests = new AtomicLongArray(keys.size());
      this.expectedNs = new AtomicLongArray(keys.size());
    }

    Report go() throws Exception {
      for (int i = 0; i < conns.length; i++) {
        conns[i] = new HttpConnection("127.0.0.1", s.server().port(), READ_TIMEOUT_MS).open();
      }
      out("%d client connections open", conns.length);
      try {
        return measure();
      } finally {
        for (HttpConnection c : conns) {
          if (c != null) {
            c.close();
          }
        }
      }
    }

    private Report measure() throws Exception {
      List<String> violations = new ArrayList<>();
      // R running and up to R waiting keep the batch full without refusing anything
      int capacityClients = maxRunning + Math.min(maxRunning, settings.queueCapacity());

      ClosedLoop warm = closedLoop(capacityClients, Duration.ZERO, settings.warmup());
      out("warm-up: %s", warm.describe());
      ClosedLoop unloaded = closedLoop(1, Duration.ZERO, settings.unloaded());
      out("unloaded (1 client): %s", unloaded.describe());
      ClosedLoop cap = closedLoop(capacityClients, Duration.ofSeconds(1), settings.capacity());
      out("capacity (%d clients): %s", capacityClients, cap.describe());
      for (ClosedLoop phase : List.of(warm, unloaded, cap)) {
        if (phase.errors() > 0) {
          violations.add(
              "a closed-loop phase below the queue's capacity got "
                  + phase.errors()
                  + " non-200 answers (first: "
                  + phase.firstError()
                  + ")");
        }
      }
      double capacity = cap.completed() / cap.seconds();
      if (cap.completed() == 0 || unloaded.completed() == 0) {
        throw new IllegalStateException(
            "nothing completed while measuring capacity: " + cap.describe());
      }
      double unloadedP99 = pct(unloaded.latencies(), 0.99);
      double rate = settings.factor() * capacity;

      OpenLoop open = new OpenLoop(rate, settings.overload());
      long gcBefore = gcCount();
      long heapBefore = heapAfterGc();
      StepStats.Snapshot stepsBefore = s.stats().snapshot();
      out(
          "overload: %.1f requests/s (%.1f x capacity %.1f/s) for %.0f s: %d arrivals; heap after"
              + " GC before: %.1f MiB",
          rate,
          settings.factor(),
          capacity,
          settings.overload().toMillis() / 1e3,
          open.n,
          heapBefore / 1048576.0);
      open.run();
      StepStats.Snapshot during = s.stats().snapshot().minus(stepsBefore);
      long heapAfter = heapAfterGc();
      if (gcCount() - gcBefore < 2) {
        violations.add("System.gc() did not run a collection (-XX:+DisableExplicitGC?)");
      }

      // ---- the overload's figures
      long admitted = 0;
      long rejected = 0;
      long noRetryAfter = 0;
      long other = 0;
      long dropped = 0;
      long[] okLatency = new long[open.n];
      long[] refusedLatency = new long[open.n];
      int nOk = 0;
      int nRefused = 0;
      for (int i = 0; i < open.n; i++) {
        int st = open.status[i];
        if (st == 200) {
          admitted++;
          okLatency[nOk++] = open.latency[i];
        } else if (st == 429 || st == 503) {
          rejected++;
          refusedLatency[nRefused++] = open.latency[i];
          if (!open.retryAfterOk[i]) {
            noRetryAfter++;
          }
        } else if (st < 0) {
          dropped++;
        } else {
          other++;
        }
      }
      okLatency = Arrays.copyOf(okLatency, nOk);
      refusedLatency = Arrays.copyOf(refusedLatency, nRefused);
      double p50 = pct(okLatency, 0.50);
      double p99 = pct(okLatency, 0.99);
      // The service rate the server kept while overloaded (it shares the 2 cores with the refusals
      // and the load generator), not the capacity measured before: the bound is about how long
      // the queue can hold a request, at the rate the queue actually drained.
      double drained = Math.max(1, admitted) / (settings.overload().toNanos() / 1e9);
      double bound =
          settings.slack() * (settings.queueCapacity() + maxRunning) / drained * 1e9 + unloadedP99;
      double lastSentLate = open.lateness[open.n - 1];
      Map<String, Long> refusals = new TreeMap<>();
      open.kinds.forEach((k, v) -> refusals.put(k, v.sum()));
      out(
          "overload: %d offered, %d admitted (%.1f/s), %d refused, %d other status, %d dropped;"
              + " by kind %s%s",
          open.n,
          admitted,
          admitted / (settings.overload().toNanos() / 1e9),
          rejected,
          other,
          dropped,
          refusals,
          open.firstError.get() == null ? "" : "; first problem: " + open.firstError.get());
      out(
          "overload latency, admitted: %s; refused: %s; bound %.1f ms = %.1f x (Q %d + R %d) /"
              + " drained %.1f/s + unloaded p99 %.1f ms",
          describe(okLatency),
          describe(refusedLatency),
          bound / 1e6,
          settings.slack(),
          settings.queueCapacity(),
          maxRunning,
          drained,
          unloadedP99 / 1e6);
      out(
          "overload sends: lateness p50 %.2f ms, p99 %.2f ms, max %.2f ms (last arrival %.2f ms"
              + " late); %d stale-connection reconnects; scheduler: %s",
          pct(open.lateness, 0.5) / 1e6,
          pct(open.lateness, 0.99) / 1e6,
          max(open.lateness) / 1e6,
          lastSentLate / 1e6,
          Arrays.stream(conns).mapToLong(HttpConnection::reconnects).sum(),
          during.describe(settings.overload().toNanos() / 1e9));
      out(
          "heap after GC: %.1f MiB before the overload, %.1f MiB after (%+.1f %%); direct buffers"
              + " %.1f MiB; process resident %s",
          heapBefore / 1048576.0,
          heapAfter / 1048576.0,
          100.0 * (heapAfter - heapBefore) / heapBefore,
          directBytes() / 1048576.0,
          residentSize());

      if (admitted == 0) {
        violations.add("no request was admitted during the overload");
      }
      if (rejected == 0) {
        violations.add(
            "no request was refused: the server was not overloaded (raise --factor or"
                + " --overload-s, or lower --queue-capacity)");
      }
      if (noRetryAfter > 0) {
        violations.add(noRetryAfter + " refusals (429/503) came without a valid Retry-After");
      }
      if (other > 0) {
        violations.add(other + " answers were neither 200 nor 429/503: " + refusals);
      }
      if (dropped > 0) {
        violations.add(
            dropped + " requests got no response (first: " + open.firstError.get() + ")");
      }
      if (nOk > 0 && (p50 > bound || p99 > bound)) {
        violations.add(
            String.format(
                Locale.ROOT,
                "admitted latency p50 %.1f ms / p99 %.1f ms exceeds the bound %.1f ms",
                p50 / 1e6,
                p99 / 1e6,
                bound / 1e6));
      }
      if (lastSentLate > 0.05 * settings.overload().toNanos()) {
        violations.add(
            String.format(
                Locale.ROOT,
                "the load generator fell behind: the last arrival went out %.0f ms late",
                lastSentLate / 1e6));
      }
      if (Math.abs(heapAfter - heapBefore) > settings.heapTolerance() * heapBefore) {
        violations.add(
            String.format(
                Locale.ROOT,
                "heap after GC moved from %.1f MiB to %.1f MiB, more than %.0f %%",
                heapBefore / 1048576.0,
                heapAfter / 1048576.0,
                100 * settings.heapTolerance()));
      }

      // ---- charges
      Charges charges = checkCharges(open);
      out("%s", charges.describe());
      violations.addAll(charges.violations());

      // ---- reconciliation over the whole run
      Reconcile rec = reconcile();
      out("%s", rec.describe());
      if (rec.driftNs() != 0 || rec.linesWithDrift() > 0) {
        violations.add("reconciliation drift: " + rec.describe());
      }
      if (!rec.exact()) {
        violations.add("reconciliation not exact (a request straddles the range): " + rec.text());
      }
      if (!rec.balanced()) {
        violations.add("reconciliation not balanced: " + rec.text());
      }

      out("");
      out(
          "| figure | value |%n|---|---|%n| capacity C (%d closed-loop clients) | %.1f completions/s"
              + " |%n| offered (open loop, %.1f x C) | %.1f requests/s for %.0f s = %d |%n"
              + "| admitted (200) / refused (429, 503) | %d / %d |%n"
              + "| refusals without Retry-After | %d |%n"
              + "| admitted latency p50 / p99, unloaded | %.1f / %.1f ms |%n"
              + "| admitted latency p50 / p99, at capacity | %.1f / %.1f ms |%n"
              + "| admitted latency p50 / p99, overload | %.1f / %.1f ms (bound %.1f ms) |%n"
              + "| refused latency p50 / p99 | %.2f / %.2f ms |%n"
              + "| heap after GC before / after | %.1f / %.1f MiB (%+.1f %%) |%n"
              + "| charges: 200s checked, missing, doubled, wrong time; refusals charged | %d, %d,"
              + " %d, %d; %d |%n"
              + "| reconciliation drift over the run | %d ns (exact %s, balanced %s) |",
          capacityClients,
          capacity,
          settings.factor(),
          rate,
          settings.overload().toMillis() / 1e3,
          open.n,
          admitted,
          rejected,
          noRetryAfter,
          pct(unloaded.latencies(), 0.5) / 1e6,
          unloadedP99 / 1e6,
          pct(cap.latencies(), 0.5) / 1e6,
          pct(cap.latencies(), 0.99) / 1e6,
          p50 / 1e6,
          p99 / 1e6,
          bound / 1e6,
          pct(refusedLatency, 0.5) / 1e6,
          pct(refusedLatency, 0.99) / 1e6,
          heapBefore / 1048576.0,
          heapAfter / 1048576.0,
          100.0 * (heapAfter - heapBefore) / heapBefore,
          charges.checked(),
          charges.missing(),
          charges.duplicated(),
          charges.wrongTime(),
          charges.chargedRefusals(),
          rec.driftNs(),
          rec.exact(),
          rec.balanced());
      out("");
      if (violations.isEmpty()) {
        out("all checks passed");
      } else {
        for (String v : violations) {
          out("FAILED: %s", v);
        }
      }
      return new Report(
          settings.queueCapacity(),
          maxRunning,
          pct(unloaded.latencies(), 0.5),
          unloadedP99,
          capacity,
          pct(cap.latencies(), 0.5),
          pct(cap.latencies(), 0.99),
          rate,
          open.n,
          admitted,
          rejected,
          noRetryAfter,
          other,
          dropped,
          p50,
          p99,
          max(okLatency),
          pct(refusedLatency, 0.5),
          pct(refusedLatency, 0.99),
          pct(open.lateness, 0.99),
          max(open.lateness),
          bound,
          heapBefore,
          heapAfter,
          charges.checked(),
          charges.missing(),
          charges.duplicated(),
          charges.wrongTime(),
          charges.chargedRefusals(),
          charges.keysChecked(),
          charges.keysWrong(),
          rec.driftNs(),
          rec.exact(),
          rec.balanced(),
          refusals,
          List.copyOf(violations),
          log.toString());
    }

    // ---------------------------------------------------------------- requests

    private int seed;

    /** The whole request for arrival {@code n} with key {@code key}. */
    byte[] request(int key, int n) {
      String body =
          String.format(
              Locale.ROOT,
              "{\"model\":\"%s\",\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":%.2f,"
                  + "\"seed\":%d}",
              s.model(),
              ServerThroughput.PROMPTS[n % ServerThroughput.PROMPTS.length],
              settings.maxTokens(),
              settings.temperature(),
              n);
      byte[] b = body.getBytes(StandardCharsets.UTF_8);
      byte[] head = keyHeaders[key];
      byte[] len = (b.length + "\r\n\r\n").getBytes(StandardCharsets.US_ASCII);
      byte[] req = new byte[head.length + len.length + b.length];
      System.arraycopy(head, 0, req, 0, head.length);
      System.arraycopy(len, 0, req, head.length, len.length);
      System.arraycopy(b, 0, req, head.length + len.length, b.length);
      return req;
    }

    /** Counts a 200 for the ledger totals of its key; returns its device time. */
    long credit(HttpConnection c, int key) {
      long ns = c.longField(DEVICE_TIME_NS, -1);
      if (ns < 0) {
        throw new IllegalStateException("200 without usage.device_time_ns: " + c.bodyText());
      }
      expectedRequests.incrementAndGet(key);
      expectedNs.addAndGet(key, ns);
      return ns;
    }

    // ---------------------------------------------------------------- closed loop

    /**
     * {@code clients} threads (connections 0..clients-1, keys in turn) loop requests for {@code
     * ramp} (not counted) plus {@code window}; counts answers that arrive inside the window and
     * their latencies; waits for every client's last request.
     */
    ClosedLoop closedLoop(int clients, Duration ramp, Duration window) throws InterruptedException {
      long from = System.nanoTime() + ramp.toNanos();
      long to = from + window.toNanos();
      AtomicLong errors = new AtomicLong();
      AtomicReference<String> firstError = new AtomicReference<>();
      long[][] lat = new long[clients][];
      int seedBase = seed;
      seed += 10_000_000;
      Thread[] threads = new Thread[clients];
      for (int c = 0; c < clients; c++) {
        int client = c;
        threads[c] =
            new Thread(
                () -> {
                  HttpConnection conn = conns[client];
                  int key = client % keys.size();
                  long[] mine = new long[1024];
                  int n = 0;
                  int sentCount = 0;
                  while (true) {
                    byte[] req = request(key, seedBase + client * 100_000 + sentCount++);
                    long sent = System.nanoTime();
                    if (sent >= to) {
                      break;
                    }
                    try {
                      conn.exchange(req);
                    } catch (IOException e) {
                      errors.incrementAndGet();
                      firstError.compareAndSet(null, e.toString());
                      continue;
                    }
                    long got = System.nanoTime();
                    if (conn.status() != 200) {
                      errors.incrementAndGet();
                      firstError.compareAndSet(null, conn.status() + " " + conn.bodyText());
                      continue;
                    }
                    credit(conn, key);
                    if (got >= from && got < to) {
                      if (n == mine.length) {
                        mine = Arrays.copyOf(mine, n * 2);
                      }
                      mine[n++] = got - sent;
                    }
                  }
                  lat[client] = Arrays.copyOf(mine, n);
                },
                "overload-closed-" + c);
        threads[c].setDaemon(true);
        threads[c].start();
      }
      joinAll(threads, ramp.plus(window).toMillis() + READ_TIMEOUT_MS + 10_000);
      long[] all = LatencyLog.concat(lat);
      return new ClosedLoop(
          all.length, window.toNanos() / 1e9, all, errors.get(), firstError.get());
    }

    // ---------------------------------------------------------------- open loop

    /** Arrivals on a fixed schedule, {@code rate} per second for {@code length}. */
    final class OpenLoop {
      final int n;
      final double intervalNs;
      final int[] status;
      final long[] latency;
      final long[] lateness;
      final long[] deviceNs;
      final boolean[] retryAfterOk;
      final long[] idHigh;
      final long[] idLow;
      final Map<Integer, String> otherIds = new ConcurrentHashMap<>();
      final Map<String, LongAdder> kinds = new ConcurrentHashMap<>();
      private final byte[][] requests;
      final AtomicReference<String> firstError = new AtomicReference<>();
      private final AtomicInteger next = new AtomicInteger();
      private final int seedBase;

      OpenLoop(double rate, Duration length) {
        n = (int) Math.max(1, Math.round(rate * length.toNanos() / 1e9));
        intervalNs = 1e9 / rate;
        status = new int[n];
        latency = new long[n];
        lateness = new long[n];
        deviceNs = new long[n];
        retryAfterOk = new boolean[n];
        idHigh = new long[n];
        idLow = new long[n];
        seedBase = seed;
        seed += 10_000_000;
        // Every request is built before the heap reading, and the answers are kept in the arrays
        // above (request ids as two longs), so the client holds no more after the overload than
        // before it.
        requests = new byte[n][];
        for (int i = 0; i < n; i++) {
          requests[i] = request(i % keys.size(), seedBase + i);
        }
      }

      /** The {@code x-request-id} of arrival i, or null if it had none. */
      String requestId(int i) {
        if (idHigh[i] == 0 && idLow[i] == 0) {
          return otherIds.get(i);
        }
        return ID_PREFIX + HEX.toHexDigits(idHigh[i]) + HEX.toHexDigits(idLow[i]);
      }

      private void keepId(int i, String id) {
        if (id != null
            && id.length() == ID_PREFIX.length() + 32
            && id.startsWith(ID_PREFIX)
            && id.chars().skip(ID_PREFIX.length()).allMatch(c -> HEX.isHexDigit(c))) {
          int at = ID_PREFIX.length();
          idHigh[i] = HexFormat.fromHexDigitsToLong(id, at, at + 16);
          idLow[i] = HexFormat.fromHexDigitsToLong(id, at + 16, at + 32);
          if (idHigh[i] != 0 || idLow[i] != 0) {
            return;
          }
        }
        if (id != null) {
          otherIds.put(i, id); // another id format: kept as it is (allocates)
        }
      }

      void run() throws InterruptedException {
        long t0 = System.nanoTime() + 50_000_000L; // every worker is parked by then
        Thread[] threads = new Thread[conns.length];
        for (int w = 0; w < conns.length; w++) {
          HttpConnection conn = conns[w];
          threads[w] =
              new Thread(
                  () -> {
                    int i;
                    while ((i = next.getAndIncrement()) < n) {
                      long due = t0 + (long) (i * intervalNs);
                      long now;
                      while ((now = System.nanoTime()) < due) {
                        LockSupport.parkNanos(due - now); // pacing the schedule
                      }
                      lateness[i] = now - due;
                      one(conn, i, due);
                    }
                  },
                  "overload-open-" + w);
          threads[w].setDaemon(true);
          threads[w].start();
        }
        joinAll(threads, (long) (n * intervalNs / 1e6) + READ_TIMEOUT_MS + 10_000);
      }

      private void one(HttpConnection conn, int i, long due) {
        try {
          conn.exchange(requests[i]);
        } catch (IOException e) {
          latency[i] = System.nanoTime() - due;
          status[i] = -1;
          firstError.compareAndSet(null, "arrival " + i + ": " + e);
          kinds.computeIfAbsent("no response", k -> new LongAdder()).increment();
          return;
        }
        latency[i] = System.nanoTime() - due;
        int st = conn.status();
        status[i] = st;
        keepId(i, conn.requestId());
        if (st == 200) {
          deviceNs[i] = credit(conn, i % keys.size());
          return;
        }
        String body = conn.bodyText();
        retryAfterOk[i] = validRetryAfter(conn.retryAfter());
        String kind =
            st
                + " "
                + Optional.ofNullable(stringField(body, "code")).orElse("?")
                + (retryAfterOk[i] ? "" : " WITHOUT Retry-After");
        kinds.computeIfAbsent(kind, k -> new LongAdder()).increment();
        if (!(st == 429 || st == 503) || !retryAfterOk[i]) {
          firstError.compareAndSet(
              null, "arrival " + i + ": " + st + " Retry-After=" + conn.retryAfter() + " " + body);
        }
      }
    }

    // ---------------------------------------------------------------- checks

    record Charges(
        long checked,
        long missing,
        long duplicated,
        long wrongTime,
        long refusalsChecked,
        long chargedRefusals,
        long keysChecked,
        long keysWrong,
        List<String> violations,
        double seconds) {
      String describe() {
        return String.format(
            Locale.ROOT,
            "charges: %d admitted looked up: %d missing, %d stored more than once, %d with another"
                + " device time; %d refusals looked up: %d charged; %d keys' ledger totals: %d"
                + " differ from the 200s (%.1f s)",
            checked,
            missing,
            duplicated,
            wrongTime,
            refusalsChecked,
            chargedRefusals,
            keysChecked,
            keysWrong,
            seconds);
      }
    }

    Charges checkCharges(OpenLoop open) {
      long t0 = System.nanoTime();
      UsageQueries usage = s.server().billing().usage();
      List<String> violations = new ArrayList<>();
      long checked = 0;
      long missing = 0;
      long duplicated = 0;
      long wrongTime = 0;
      long refusalsChecked = 0;
      long chargedRefusals = 0;
      long withoutId = 0;
      for (int i = 0; i < open.n; i++) {
        int st = open.status[i];
        if (st != 200 && st != 429 && st != 503) {
          continue;
        }
        String id = open.requestId(i);
        if (id == null) {
          withoutId++;
          continue;
        }
        long count = usage.countForRequest(id);
        if (st == 200) {
          checked++;
          if (count == 0) {
            missing++;
            violations.add("200 " + id + " has no stored charge");
            continue;
          }
          if (count > 1) {
            duplicated++;
            violations.add("200 " + id + " is stored " + count + " times");
          }
          Optional<StoredUsage> stored = usage.find(id);
          if (stored.isPresent() && stored.get().record().deviceNs() != open.deviceNs[i]) {
            wrongTime++;
            violations.add(
                "200 "
                    + id
                    + " answered device_time_ns "
                    + open.deviceNs[i]
                    + " but stored "
                    + stored.get().record().deviceNs());
          }
        } else {
          refusalsChecked++;
          if (count > 0) {
            chargedRefusals++;
            violations.add(st + " " + id + " has a stored charge");
          }
        }
      }
      if (withoutId > 0) {
        violations.add(withoutId + " answers carried no x-request-id, so could not be looked up");
      }
      long keysWrong = 0;
      Instant to = Instant.now().plus(1, ChronoUnit.HOURS);
      for (int k = 0; k < keys.size(); k++) {
        UsageTotals t = usage.usage(keys.get(k).keyId(), runStart, to).totals();
        if (t.requests() != expectedRequests.get(k) || t.deviceNs() != expectedNs.get(k)) {
          keysWrong++;
          violations.add(
              String.format(
                  Locale.ROOT,
                  "key %d: the ledger holds %d requests / %d ns, the 200s said %d / %d",
                  keys.get(k).keyId(),
                  t.requests(),
                  t.deviceNs(),
                  expectedRequests.get(k),
                  expectedNs.get(k)));
        }
      }
      List<String> shown = new ArrayList<>(violations.subList(0, Math.min(10, violations.size())));
      if (violations.size() > 10) {
        shown.add("... and " + (violations.size() - 10) + " more charge problems");
      }
      return new Charges(
          checked,
          missing,
          duplicated,
          wrongTime,
          refusalsChecked,
          chargedRefusals,
          keys.size(),
          keysWrong,
          shown,
          (System.nanoTime() - t0) / 1e9);
    }

    record Reconcile(
        long driftNs,
        long linesWithDrift,
        boolean exact,
        boolean balanced,
        Instant from,
        Instant to,
        String text) {
      String describe() {
        return String.format(
            Locale.ROOT,
            "reconciliation [%s, %s): total drift %d ns, %d lines with drift, exact %s, balanced"
                + " %s",
            from,
            to,
            driftNs,
            linesWithDrift,
            exact,
            balanced);
      }
    }

    /** {@code GET /admin/reconcile} from the minute the server started to the next minute. */
    Reconcile reconcile() throws IOException {
      Instant from = runStart.truncatedTo(ChronoUnit.MINUTES);
      Instant to = Instant.now().truncatedTo(ChronoUnit.MINUTES).plus(1, ChronoUnit.MINUTES);
      byte[] req =
          ("GET /admin/reconcile?from="
                  + from
                  + "&to="
                  + to
                  + " HTTP/1.1\r\nHost: 127.0.0.1:"
                  + s.server().port()
                  + "\r\nAuthorization: Bearer "
                  + adminToken
                  + "\r\n\r\n")
              .getBytes(StandardCharsets.US_ASCII);
      HttpConnection c = conns[0];
      c.exchange(req);
      String body = c.bodyText();
      if (c.status() != 200) {
        throw new IllegalStateException("/admin/reconcile answered " + c.status() + " " + body);
      }
      long drift = c.longField(HttpConnection.jsonName("total_drift_ns"), Long.MIN_VALUE);
      if (drift == Long.MIN_VALUE) {
        throw new IllegalStateException("no total_drift_ns in " + body);
      }
      long linesWithDrift =
          LINE_DRIFT.matcher(body).results().filter(m -> !m.group(1).equals("0")).count();
      boolean exact = body.contains("\"exact\":true");
      boolean balanced = body.contains("\"balanced\":true");
      String text = Optional.ofNullable(stringField(body, "text")).orElse(body);
      return new Reconcile(drift, linesWithDrift, exact, balanced, from, to, text);
    }
  }

  /** What one closed-loop phase measured. */
  record ClosedLoop(
      long completed, double seconds, long[] latencies, long errors, String firstError) {
    String describe() {
      return String.format(
          Locale.ROOT,
          "%d completed in %.1f s (%.1f/s), latency %s, %d errors%s",
          completed,
          seconds,
          completed / seconds,
          Overload.describe(latencies),
          errors,
          firstError == null ? "" : " (first: " + firstError + ")");
    }
  }

  // ------------------------------------------------------------------ helpers

  /** A {@code Retry-After} value: delta-seconds, or an HTTP date (RFC 9110 section 10.2.3). */
  static boolean validRetryAfter(String v) {
    if (v == null || v.isEmpty()) {
      return false;
    }
    if (v.chars().allMatch(Character::isDigit)) {
      return v.length() <= 9;
    }
    try {
      DateTimeFormatter.RFC_1123_DATE_TIME.parse(v);
      return true;
    } catch (DateTimeParseException e) {
      return false;
    }
  }

  /** The string value of JSON field {@code name} (first occurrence, simple escapes), or null. */
  static String stringField(String json, String name) {
    String key = "\"" + name + "\":\"";
    int at = json.indexOf(key);
    if (at < 0) {
      return null;
    }
    StringBuilder sb = new StringBuilder();
    for (int i = at + key.length(); i < json.length(); i++) {
      char c = json.charAt(i);
      if (c == '"') {
        return sb.toString();
      }
      if (c == '\\' && i + 1 < json.length()) {
        char e = json.charAt(++i);
        sb.append(
            switch (e) {
              case 'n' -> '\n';
              case 't' -> '\t';
              case 'r' -> '\r';
              default -> e;
            });
      } else {
        sb.append(c);
      }
    }
    return null;
  }

  private static String newAdminToken() {
    byte[] b = new byte[16];
    new SecureRandom().nextBytes(b);
    return HEX.formatHex(b);
  }

  private static void joinAll(Thread[] threads, long timeoutMs) throws InterruptedException {
    long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
    for (Thread t : threads) {
      long left = (deadline - System.nanoTime()) / 1_000_000L;
      if (left > 0) {
        t.join(left);
      }
      if (t.isAlive()) {
        throw new IllegalStateException(
            t.getName() + " still running after " + timeoutMs + " ms: a response never came");
      }
    }
  }

  /** Heap used after a full collection: the smallest of three readings, each after System.gc(). */
  static long heapAfterGc() {
    long best = Long.MAX_VALUE;
    for (int i = 0; i < 3; i++) {
      System.gc();
      best = Math.min(best, ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed());
    }
    return best;
  }

  private static long gcCount() {
    long n = 0;
    for (GarbageCollectorMXBean gc : ManagementFactory.getGarbageCollectorMXBeans()) {
      n += Math.max(0, gc.getCollectionCount());
    }
    return n;
  }

  private static long directBytes() {
    return ManagementFactory.getPlatformMXBeans(BufferPoolMXBean.class).stream()
        .filter(b -> b.getName().equals("direct"))
        .mapToLong(BufferPoolMXBean::getMemoryUsed)
        .sum();
  }

  private static String residentSize() {
    try (Stream<String> lines = Files.lines(Path.of("/proc/self/status"))) {
      return lines
          .filter(l -> l.startsWith("VmRSS:"))
          .findFirst()
          .map(l -> l.substring(6).trim())
          .orElse("unknown");
    } catch (IOException | RuntimeException e) {
      return "unknown";
    }
  }

  static String loadAverage() {
    try {
      String[] f = Files.readString(Path.of("/proc/loadavg")).trim().split(" ");
      return f[0] + " " + f[1] + " " + f[2];
    } catch (IOException | RuntimeException e) {
      return "unknown";
    }
  }

  /** The p-quantile (nearest rank) of unsorted values; NaN when empty. */
  static double pct(long[] values, double p) {
    if (values.length == 0) {
      return Double.NaN;
    }
    long[] v = values.clone();
    Arrays.sort(v);
    int idx = (int) Math.min(v.length - 1, Math.max(0, Math.ceil(p * v.length) - 1));
    return v[idx];
  }

  private static double max(long[] values) {
    return values.length == 0 ? Double.NaN : Arrays.stream(values).max().getAsLong();
  }

  static String describe(long[] nanos) {
    if (nanos.length == 0) {
      return "none";
    }
    return String.format(
        Locale.ROOT,
        "p50 %.1f ms, p99 %.1f ms, max %.1f ms (n=%d)",
        pct(nanos, 0.5) / 1e6,
        pct(nanos, 0.99) / 1e6,
        max(nanos) / 1e6,
        nanos.length);
  }

  private void out(String format, Object... args) {
    String line = String.format(Locale.ROOT, format, args);
    synchronized (log) {
      log.append(line).append('\n');
    }
    System.out.println(line);
    System.out.flush();
  }
}
