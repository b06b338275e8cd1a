package io.gpumeter.benchmarks;

import io.gpumeter.batching.StepListener;
import io.gpumeter.server.GpumeterServer;
import io.gpumeter.server.ServerConfig;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.DoubleAdder;
import java.util.concurrent.locks.LockSupport;
import java.util.stream.Stream;

/**
 * Load tool for streaming (a plain main): the real server on this machine's CPU, in-process or
 * (with {@code --server}) in JVMs of their own, B = 1, 8, 32 clients each looping {@code POST
 * /v1/completions} with {@code stream: true} (HTTP/1.1, keep-alive, one key per client). Per
 * request it records the time to first token (send to the first {@code data:} event with text) and
 * every inter-token gap (between successive text events); the table gives p50 and p99 over all
 * requests of a slice. At 32 clients it then alternates streaming and non-streaming slices of the
 * same length, side by side, {@code rounds} times (odd rounds stream first, even rounds second, so
 * a drift in the machine's load falls on both), and reports generated tokens/s of each and their
 * ratio (streaming / non-streaming) per round, then the median of the rounds' ratios, their range
 * and the pooled ratio (all rounds' tokens over all rounds' seconds); with {@code --server}, also
 * the server process's CPU time per generated token in each slice (user + system, from {@link
 * ProcessHandle.Info#totalCpuDuration}), streaming against not, and that CPU split by the server's
 * thread groups ({@link ThreadCpu}: event loops, scheduler with PyTorch's workers, the rest).
 *
 * <p>Each slice is measured in its steady state: its clients start together, run for {@code --ramp}
 * seconds (default 3) before the window opens; a request's tokens count by the part of its life
 * inside the window; the server's CPU is read at the window's ends; after it the clients finish the
 * requests they have begun. Before any slice, {@code --warmup} seconds (default 10) of each mode at
 * 32 clients are run and dropped, so the JIT compiles the streaming path before it is measured (a
 * short warm-up left C2 compiling it during the first measured slices: up to a fifth of the
 * server's CPU in them).
 *
 * <p>Clients ({@code --client raw|jdk|raw,jdk}, default {@code raw}): {@code raw} is {@link
 * RawSseClient}, a blocking socket per client that splits events by bytes and parses only the usage
 * event, so the clients take as little of the shared CPU as possible and the ratio is about the
 * server; {@code jdk} is the JDK {@link HttpClient} reading the stream as lines (the client of the
 * earlier figures). With both, each round measures both, side by side.
 *
 * <p>Usage: {@code java -cp benchmarks.jar io.gpumeter.benchmarks.StreamingThroughput [--models
 * DIR] [--seconds 10] [--rounds 3] [--max-tokens 64] [--ramp 3] [--warmup 10] [--server
 * label=classpath]... [--server-jfr DIR] [--server-env label:NAME=VALUE]... [--client
 * raw|jdk|raw,jdk]}: each {@code --server} starts one {@link StreamingServerProcess} (an empty
 * classpath for this build's own server, another build's jar to compare it), measured in
 * alternation, slice by slice; {@code --server-jfr DIR} records each server process with JFR's
 * profile settings into {@code DIR/label.jfr} (written when it stops); {@code --server-env} sets an
 * environment variable for one server's process only (to compare a setting side by side).
 */
public final class StreamingThroughput {
  private static final String BODY =
      "{\"model\":\"%s\",\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":1,\"seed\":%d%s}";

  private final Path modelsDir;
  private final Duration slice;
  private final int rounds;
  private final int maxTokens;
  private final List<String> clientKinds;
  private final Duration ramp;
  private final Duration warmup;
  private final AtomicLong seeds = new AtomicLong();

  private StreamingThroughput(
      Path modelsDir,
      Duration slice,
      int rounds,
      int maxTokens,
      List<String> clientKinds,
      Duration ramp,
      Duration warmup) {
    this.modelsDir = modelsDir;
    this.slice = slice;
    this.rounds = rounds;
    this.maxTokens = maxTokens;
    this.clientKinds = clientKinds;
    this.ramp = ramp;
    this.warmup = warmup;
  }

  public static void main(String[] args) throws Exception {
    Path models = Path.of("models");
    int seconds = 10;
    int rounds = 3;
    int maxTokens = 64;
    List<String> servers = new ArrayList<>();
    List<String> serverEnv = new ArrayList<>();
    Path jfrDir = null;
    List<String> clientKinds = List.of("raw");
    int rampSeconds = 3;
    int warmupSeconds = 10;
    for (int i = 0; i + 1 < args.length; i += 2) {
      switch (args[i]) {
        case "--server" -> servers.add(args[i + 1]);
        case "--server-jfr" -> jfrDir = Path.of(args[i + 1]);
        case "--server-env" -> serverEnv.add(args[i + 1]);
        case "--models" -> models = Path.of(args[i + 1]);
        case "--seconds" -> seconds = Integer.parseInt(args[i + 1]);
        case "--rounds" -> rounds = Integer.parseInt(args[i + 1]);
        case "--max-tokens" -> maxTokens = Integer.parseInt(args[i + 1]);
        case "--ramp" -> rampSeconds = Integer.parseInt(args[i + 1]);
        case "--warmup" -> warmupSeconds = Integer.parseInt(args[i + 1]);
        case "--client" -> {
          clientKinds = List.of(args[i + 1].split(","));
          for (String k : clientKinds) {
            if (!k.equals("raw") && !k.equals("jdk")) {
              throw new IllegalArgumentException("--client is raw, jdk or raw,jdk: " + k);
            }
          }
        }
        default -> throw new IllegalArgumentException("unknown option " + args[i]);
      }
    }
    StreamingThroughput bench =
        new StreamingThroughput(
            models,
            Duration.ofSeconds(seconds),
            rounds,
            maxTokens,
            clientKinds,
            Duration.ofSeconds(rampSeconds),
            Duration.ofSeconds(warmupSeconds));
    if (servers.isEmpty()) {
      bench.run();
    } else {
      bench.runSeparate(servers, jfrDir, serverEnv);
    }
    System.exit(0);
  }

  /**
   * A server under load: its port, one key per client, its model, and its process (null when it
   * runs in this JVM).
   */
  record Target(String label, int port, List<String> keys, String model, ProcessHandle process) {}

  /** What one slice measured; {@code serverCpuNs} is -1 when the server is in this JVM. */
  record Slice(
      double tokens,
      double seconds,
      long requests,
      long[] ttftNs,
      long[] gapNs,
      long serverCpuNs,
      Map<String, Long> threadCpuNs) {
    double tokensPerSecond() {
      return tokens / seconds;
    }

    /** The server's CPU microseconds per generated token, or NaN. */
    double cpuMicrosPerToken() {
      return serverCpuNs < 0 || tokens <= 0 ? Double.NaN : serverCpuNs / 1e3 / tokens;
    }
  }

  private static long cpuNanos(ProcessHandle p) {
    return p == null ? -1 : p.info().totalCpuDuration().map(Duration::toNanos).orElse(-1L);
  }

  private void run() throws Exception {
    Path data = Files.createTempDirectory("gpumeter-streaming-");
    GpumeterServer server =
        GpumeterServer.start(
            ServerConfig.builder()
                .host("127.0.0.1")
                .port(0)
                .modelsDir(modelsDir)
                .dataDir(data)
                .device("cpu")
                .build(),
            StepListener.NONE);
    List<String> keys = new ArrayList<>();
    for (int i = 0; i < 32; i++) {
      keys.add(server.billing().apiKeys().create("stream-client-" + i).plaintext());
    }
    Target t =
        new Target("in-process", server.port(), keys, server.schedulers().get(0).modelName(), null);
    try {
      measure(List.of(t), "clients in the server's JVM");
    } finally {
      server.close();
    }
  }

  /**
   * Each {@code label=classpath} runs {@link StreamingServerProcess} in a JVM of its own (that
   * classpath first, then this one's, so another build's server classes win); the clients stay in
   * this JVM. All servers start before any load, idle while another is measured, and are measured
   * in alternation, so two builds are compared side by side under the same machine load.
   */
  private void runSeparate(List<String> servers, Path jfrDir, List<String> serverEnv)
      throws Exception {
    List<Process> processes = new ArrayList<>();
    List<Target> targets = new ArrayList<>();
    try {
      for (String spec : servers) {
        int eq = spec.indexOf('=');
        String label = spec.substring(0, eq);
        String own = System.getProperty("java.class.path");
        String cp =
            eq + 1 == spec.length()
                ? own
                : spec.substring(eq + 1) + java.io.File.pathSeparator + own;
        List<String> command = new ArrayList<>();
        command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        command.add("-Dgpumeter.log.level=WARN");
        if (jfrDir != null) {
          command.add(
              "-XX:StartFlightRecording=settings=profile,dumponexit=true,filename="
                  + jfrDir.resolve(label + ".jfr"));
        }
        command.addAll(
            List.of("-cp", cp, StreamingServerProcess.class.getName(), modelsDir.toString(), "32"));
        ProcessBuilder pb =
            new ProcessBuilder(command).redirectError(ProcessBuilder.Redirect.INHERIT);
        for (String e : serverEnv) { // label:NAME=VALUE, for that server's process only
          int colon = e.indexOf(':');
          int is = e.indexOf('=', colon);
          if (colon < 0 || is < 0) {
            throw new IllegalArgumentException("--server-env is label:NAME=VALUE: " + e);
          }
          if (e.substring(0, colon).equals(label)) {
            pb.environment().put(e.substring(colon + 1, is), e.substring(is + 1));
          }
        }
        Process p = pb.start();
        processes.add(p);
        java.io.BufferedReader out =
            new java.io.BufferedReader(
                new java.io.InputStreamReader(
                    p.getInputStream(), java.nio.charset.StandardCharsets.UTF_8));
        String model = null;
        List<String> keys = new ArrayList<>();
        int port = -1;
        String line;
        while (port < 0 && (line = out.readLine()) != null) {
          if (line.startsWith("MODEL ")) {
            model = line.substring(6);
          } else if (line.startsWith("KEY ")) {
            keys.add(line.substring(4));
          } else if (line.startsWith("PORT ")) {
            port = Integer.parseInt(line.substring(5));
          }
        }
        if (port < 0) {
          throw new IllegalStateException("server " + label + " ended before it listened");
        }
        Thread drain =
            new Thread(
                () -> {
                  try {
                    while (out.readLine() != null) {
                      // the server's own output is not measured
                    }
                  } catch (java.io.IOException e) {
                    // the server ended
                  }
                });
        drain.setDaemon(true);
        drain.start();
        targets.add(new Target(label, port, keys, model, p.toHandle()));
      }
      measure(targets, "clients in a separate JVM from the server");
    } finally {
      for (Process p : processes) {
        p.getOutputStream().close();
      }
      for (Process p : processes) {
        if (!p.waitFor(60, java.util.concurrent.TimeUnit.SECONDS)) {
          p.destroy();
        }
      }
    }
  }

  private void measure(List<Target> targets, String where) throws Exception {
    System.out.printf(
        Locale.ROOT,
        "StreamingThroughput %s, %s, %d cores, load %s, max_tokens %d, slices of %d s,"
            + " clients %s%n",
        Instant.now(),
        where,
        Runtime.getRuntime().availableProcessors(),
        Files.readString(Path.of("/proc/loadavg")).trim(),
        maxTokens,
        slice.toSeconds(),
        clientKinds);
    for (Target t : targets) {
      for (String k : clientKinds) {
        // warm-up, not counted: the JIT, the allocator and the model's kernels at the measured load
        load(t, 32, true, Duration.ZERO, warmup, k);
        load(t, 32, false, Duration.ZERO, warmup, k);
      }
    }
    System.out.println();
    System.out.println(
        "| server | clients | requests | tokens/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |");
    System.out.println("|---|---|---|---|---|---|---|---|");
    for (int b : new int[] {1, 8, 32}) {
      for (Target t : targets) {
        Slice s = load(t, b, true, ramp, slice, clientKinds.get(0));
        System.out.printf(
            Locale.ROOT,
            "| %s | %d | %d | %.1f | %.1f | %.1f | %.2f | %.2f |%n",
            t.label(),
            b,
            s.requests(),
            s.tokensPerSecond(),
            pct(s.ttftNs(), 50) / 1e6,
            pct(s.ttftNs(), 99) / 1e6,
            pct(s.gapNs(), 50) / 1e6,
            pct(s.gapNs(), 99) / 1e6);
      }
    }
    System.out.println();
    System.out.println(
        "| round | server | client | streaming tokens/s | non-streaming tokens/s | ratio"
            + " | server CPU µs/token streaming | non-streaming | load |");
    System.out.println("|---|---|---|---|---|---|---|---|---|");
    int kinds = clientKinds.size();
    List<List<Slice[]>> pairs = new ArrayList<>(); // per target and client: each round's pair
    for (int i = 0; i < targets.size() * kinds; i++) {
      pairs.add(new ArrayList<>());
    }
    for (int r = 1; r <= rounds; r++) {
      for (int i = 0; i < targets.size(); i++) {
        for (int k = 0; k < kinds; k++) {
          Target t = targets.get(i);
          // interleaved: odd rounds stream first, even rounds second, so a drift in the
          // machine's load over a round falls on both modes alike
          boolean streamFirst = r % 2 == 1;
          Slice first = load(t, 32, streamFirst, ramp, slice, clientKinds.get(k));
          Slice second = load(t, 32, !streamFirst, ramp, slice, clientKinds.get(k));
          Slice a = streamFirst ? first : second;
          Slice b = streamFirst ? second : first;
          pairs.get(i * kinds + k).add(new Slice[] {a, b});
          System.out.printf(
              Locale.ROOT,
              "| %d | %s | %s | %.1f | %.1f | %.3f | %.1f | %.1f | %s |%n",
              r,
              t.label(),
              clientKinds.get(k),
              a.tokensPerSecond(),
              b.tokensPerSecond(),
              a.tokensPerSecond() / b.tokensPerSecond(),
              a.cpuMicrosPerToken(),
              b.cpuMicrosPerToken(),
              Files.readString(Path.of("/proc/loadavg")).trim().split(" ")[0]);
        }
      }
    }
    System.out.println();
    System.out.println(
        "| server | client | rounds | ratio: median of rounds | min | max | pooled ratio"
            + " | server CPU µs/token streaming | non-streaming | CPU streaming / not |");
    System.out.println("|---|---|---|---|---|---|---|---|---|---|");
    for (int i = 0; i < targets.size(); i++) {
      for (int k = 0; k < kinds; k++) {
        List<Slice[]> ps = pairs.get(i * kinds + k);
        double[] ratios =
            ps.stream().mapToDouble(p -> p[0].tokensPerSecond() / p[1].tokensPerSecond()).toArray();
        Arrays.sort(ratios);
        Slice a = pooled(ps, 0);
        Slice b = pooled(ps, 1);
        System.out.printf(
            Locale.ROOT,
            "| %s | %s | %d | **%.3f** | %.3f | %.3f | **%.3f** | %.1f | %.1f | %.3f |%n",
            targets.get(i).label(),
            clientKinds.get(k),
            ps.size(),
            median(ratios),
            ratios[0],
            ratios[ratios.length - 1],
            a.tokensPerSecond() / b.tokensPerSecond(),
            a.cpuMicrosPerToken(),
            b.cpuMicrosPerToken(),
            a.cpuMicrosPerToken() / b.cpuMicrosPerToken());
      }
    }
    for (int i = 0; i < targets.size(); i++) {
      for (int k = 0; k < kinds; k++) {
        List<Slice[]> ps = pairs.get(i * kinds + k);
        Slice a = pooled(ps, 0);
        Slice b = pooled(ps, 1);
        if (a.threadCpuNs().isEmpty()) {
          continue;
        }
        System.out.println();
        System.out.printf(
            Locale.ROOT,
            "Server CPU per token by thread group, %s, %s clients, all rounds%n",
            targets.get(i).label(),
            clientKinds.get(k));
        System.out.println();
        System.out.println("| threads | µs/token streaming | non-streaming | difference |");
        System.out.println("|---|---|---|---|");
        java.util.Set<String> groups = new java.util.TreeSet<>(a.threadCpuNs().keySet());
        groups.addAll(b.threadCpuNs().keySet());
        for (String g : groups) {
          double sa = a.threadCpuNs().getOrDefault(g, 0L) / 1e3 / Math.max(1.0, a.tokens());
          double sb = b.threadCpuNs().getOrDefault(g, 0L) / 1e3 / Math.max(1.0, b.tokens());
          if (sa >= 0.5 || sb >= 0.5) {
            System.out.printf(Locale.ROOT, "| %s | %.1f | %.1f | %+.1f |%n", g, sa, sb, sa - sb);
          }
        }
      }
    }
    System.out.printf(
        Locale.ROOT, "load at the end: %s%n", Files.readString(Path.of("/proc/loadavg")).trim());
  }

  /** The slices {@code ps[*][which]} as one: tokens, seconds and CPU summed. */
  private static Slice pooled(List<Slice[]> ps, int which) {
    double tokens = 0;
    double seconds = 0;
    long requests = 0;
    long cpu = 0;
    Map<String, Long> threads = new TreeMap<>();
    for (Slice[] p : ps) {
      Slice s = p[which];
      tokens += s.tokens();
      seconds += s.seconds();
      requests += s.requests();
      cpu = cpu < 0 || s.serverCpuNs() < 0 ? -1 : cpu + s.serverCpuNs();
      s.threadCpuNs().forEach((g, v) -> threads.merge(g, v, Long::sum));
    }
    return new Slice(tokens, seconds, requests, new long[0], new long[0], cpu, threads);
  }

  private static double median(double[] sorted) {
    int n = sorted.length;
    return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  }

  private static long pct(long[] sorted, int p) {
    if (sorted.length == 0) {
      return 0;
    }
    int i = (int) Math.min(sorted.length - 1, Math.ceil(p / 100.0 * sorted.length) - 1);
    return sorted[Math.max(0, i)];
  }

  /**
   * {@code clients} threads loop requests for {@code ramp + len}; the window is {@code [ramp, ramp
   * + len)}. Each request adds the share of its tokens that falls inside the window (its tokens
   * times the part of its life inside the window, as if made evenly: a completion's tokens all
   * arrive at its end, and at 32 clients the requests run in step, so counting whole requests that
   * finish in the window made a slice's figure jump by a batch of 32 requests), a request started
   * inside the window adds its TTFT and gaps, and the server's CPU is read at the window's two
   * ends. So neither the ramp (every client's first request starts at once) nor the tail (clients
   * finishing their last request, fewer and fewer in the batch) is measured: the window sees the
   * steady load of {@code clients} concurrent requests.
   */
  private Slice load(
      Target target, int clients, boolean stream, Duration ramp, Duration len, String kind)
      throws Exception {
    List<String> keys = target.keys();
    String model = target.model();
    HttpClient http =
        HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .executor(Executors.newFixedThreadPool(4))
            .build();
    URI uri = URI.create("http://127.0.0.1:" + target.port() + "/v1/completions");
    ConcurrentLinkedQueue<Long> ttft = new ConcurrentLinkedQueue<>();
    ConcurrentLinkedQueue<Long> gaps = new ConcurrentLinkedQueue<>();
    DoubleAdder tokens = new DoubleAdder();
    AtomicLong requests = new AtomicLong();
    ExecutorService pool = Executors.newFixedThreadPool(clients);
    long start = System.nanoTime();
    long from = start + ramp.toNanos();
    long end = from + len.toNanos();
    List<Future<?>> fs = new ArrayList<>();
    for (int c = 0; c < clients; c++) {
      String key = keys.get(c);
      fs.add(
          pool.submit(
              () -> {
                RawSseClient raw = kind.equals("raw") ? new RawSseClient(target.port()) : null;
                try {
                  while (System.nanoTime() < end) {
                    String body =
                        String.format(
                            Locale.ROOT,
                            BODY,
                            model,
                            ServerThroughput.PROMPTS[
                                (int) (seeds.get() % ServerThroughput.PROMPTS.length)],
                            maxTokens,
                            seeds.incrementAndGet(),
                            stream
                                ? ",\"stream\":true,\"stream_options\":{\"include_usage\":true}"
                                : "");
                    HttpRequest req =
                        HttpRequest.newBuilder(uri)
                            .header("Authorization", "Bearer " + key)
                            .header("Content-Type", "application/json")
                            .POST(HttpRequest.BodyPublishers.ofString(body))
                            .build();
                    long t0 = System.nanoTime();
                    List<Long> firsts = new ArrayList<>(1);
                    List<Long> between = new ArrayList<>(maxTokens);
                    long n;
                    if (raw != null) {
                      long[] last = {-1};
                      n =
                          raw.post(
                              key,
                              body,
                              stream,
                              now -> {
                                if (last[0] < 0) {
                                  firsts.add(now - t0);
                                } else {
                                  between.add(now - last[0]);
                                }
                                last[0] = now;
                              });
                    } else if (stream) {
                      HttpResponse<Stream<String>> r =
                          http.send(req, HttpResponse.BodyHandlers.ofLines());
                      long last = -1;
                      n = 0;
                      try (Stream<String> lines = r.body()) {
                        Iterator<String> it = lines.iterator();
                        while (it.hasNext()) {
                          String line = it.next();
                          if (line.startsWith("data: {") && line.contains("\"usage\"")) {
                            n = ServerThroughput.completionTokens(line.substring(6));
                            continue;
                          }
                          if (!line.startsWith("data: {")
                              || !line.contains("\"text\":\"")
                              || line.contains("\"text\":\"\"")) {
                            continue;
                          }
                          long now = System.nanoTime();
                          if (last < 0) {
                            firsts.add(now - t0);
                          } else {
                            between.add(now - last);
                          }
                          last = now;
                        }
                      }
                      if (r.statusCode() != 200) {
                        throw new IllegalStateException("status " + r.statusCode());
                      }
                    } else {
                      HttpResponse<String> r = http.send(req, HttpResponse.BodyHandlers.ofString());
                      if (r.statusCode() != 200) {
                        throw new IllegalStateException(
                            "status " + r.statusCode() + " " + r.body());
                      }
                      n = ServerThroughput.completionTokens(r.body());
                    }
                    long done = System.nanoTime();
                    // the share of its tokens made inside the window, as if made evenly
                    long in = Math.min(done, end) - Math.max(t0, from);
                    if (in > 0) {
                      tokens.add((double) n * in / Math.max(1, done - t0));
                    }
                    if (t0 >= from && t0 < end) {
                      requests.incrementAndGet();
                      ttft.addAll(firsts);
                      gaps.addAll(between);
                    }
                  }
                } finally {
                  if (raw != null) {
                    raw.close();
                  }
                }
                return null;
              }));
    }
    long pid = target.process() == null ? -1 : target.process().pid();
    parkUntil(from);
    long cpuBefore = cpuNanos(target.process());
    Map<String, Long> threadsBefore = pid < 0 ? Map.of() : ThreadCpu.sample(pid);
    long measuredFrom = System.nanoTime();
    parkUntil(end);
    long cpuAfter = cpuNanos(target.process());
    Map<String, Long> threads =
        pid < 0 ? Map.of() : ThreadCpu.minus(ThreadCpu.sample(pid), threadsBefore);
    double seconds = (System.nanoTime() - measuredFrom) / 1e9;
    for (Future<?> f : fs) {
      f.get();
    }
    pool.shutdown();
    long[] t = ttft.stream().mapToLong(Long::longValue).sorted().toArray();
    long[] g = gaps.stream().mapToLong(Long::longValue).sorted().toArray();
    Arrays.sort(t);
    return new Slice(
        tokens.sum(),
        seconds,
        requests.get(),
        t,
        g,
        cpuBefore < 0 || cpuAfter < 0 ? -1 : cpuAfter - cpuBefore,
        threads);
  }

  /** Waits until {@link System#nanoTime} reaches {@code deadline} (a measurement window's edge). */
  private static void parkUntil(long deadline) {
    for (long left; (left = deadline - System.nanoTime()) > 0; ) {
      LockSupport.parkNanos(left);
    }
  }
}
