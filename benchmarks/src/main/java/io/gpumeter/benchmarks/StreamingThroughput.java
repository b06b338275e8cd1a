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
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;

/**
 * Load tool for streaming (a plain main): the real server on this machine's CPU, in-process or
 * (with {@code --server}) in JVMs of their own, B = 1, 8, 32 clients each looping {@code POST
 * /v1/completions} with {@code stream: true} (HTTP/1.1, keep-alive, one key per client). Per
 * request it records the time to first token (send to the first {@code data:} event with text) and
 * every inter-token gap (between successive text events); the table gives p50 and p99 over all
 * requests of a slice. At 32 clients it then alternates streaming and non-streaming slices of the
 * same length, side by side, {@code rounds} times, and reports generated tokens/s of each and their
 * ratio (streaming / non-streaming) per round and in total; with {@code --server}, also the server
 * process's CPU time per generated token in each slice (user + system, from {@link
 * ProcessHandle.Info#totalCpuDuration}), streaming against not.
 *
 * <p>Clients ({@code --client raw|jdk|raw,jdk}, default {@code raw}): {@code raw} is {@link
 * RawSseClient}, a blocking socket per client that splits events by bytes and parses only the usage
 * event, so the clients take as little of the shared CPU as possible and the ratio is about the
 * server; {@code jdk} is the JDK {@link HttpClient} reading the stream as lines (the client of the
 * earlier figures). With both, each round measures both, side by side.
 *
 * <p>Usage: {@code java -cp benchmarks.jar io.gpumeter.benchmarks.StreamingThroughput [--models
 * DIR] [--seconds 10] [--rounds 3] [--max-tokens 64] [--server label=classpath]... [--server-jfr
 * DIR] [--client raw|jdk|raw,jdk]}: each {@code --server} starts one {@link StreamingServerProcess}
 * (an empty classpath for this build's own server, another build's jar to compare it), measured in
 * alternation, slice by slice; {@code --server-jfr DIR} records each server process with JFR's
 * profile settings into {@code DIR/label.jfr} (written when it stops).
 */
public final class StreamingThroughput {
  private static final String BODY =
      "{\"model\":\"%s\",\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":1,\"seed\":%d%s}";

  private final Path modelsDir;
  private final Duration slice;
  private final int rounds;
  private final int maxTokens;
  private final List<String> clientKinds;
  private final AtomicLong seeds = new AtomicLong();

  private StreamingThroughput(
      Path modelsDir, Duration slice, int rounds, int maxTokens, List<String> clientKinds) {
    this.modelsDir = modelsDir;
    this.slice = slice;
    this.rounds = rounds;
    this.maxTokens = maxTokens;
    this.clientKinds = clientKinds;
  }

  public static void main(String[] args) throws Exception {
    Path models = Path.of("models");
    int seconds = 10;
    int rounds = 3;
    int maxTokens = 64;
    List<String> servers = new ArrayList<>();
    Path jfrDir = null;
    List<String> clientKinds = List.of("raw");
    for (int i = 0; i + 1 < args.length; i += 2) {
      switch (args[i]) {
        case "--server" -> servers.add(args[i + 1]);
        case "--server-jfr" -> jfrDir = Path.of(args[i + 1]);
        case "--models" -> models = Path.of(args[i + 1]);
        case "--seconds" -> seconds = Integer.parseInt(args[i + 1]);
        case "--rounds" -> rounds = Integer.parseInt(args[i + 1]);
        case "--max-tokens" -> maxTokens = Integer.parseInt(args[i + 1]);
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
            models, Duration.ofSeconds(seconds), rounds, maxTokens, clientKinds);
    if (servers.isEmpty()) {
      bench.run();
    } else {
      bench.runSeparate(servers, jfrDir);
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
      long tokens, double seconds, long requests, long[] ttftNs, long[] gapNs, long serverCpuNs) {
    double tokensPerSecond() {
      return tokens / seconds;
    }

    /** The server's CPU microseconds per generated token, or NaN. */
    double cpuMicrosPerToken() {
      return serverCpuNs < 0 || tokens == 0 ? Double.NaN : serverCpuNs / 1e3 / tokens;
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
  private void runSeparate(List<String> servers, Path jfrDir) throws Exception {
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
        Process p =
            new ProcessBuilder(command).redirectError(ProcessBuilder.Redirect.INHERIT).start();
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
        load(t, 8, true, Duration.ofSeconds(3), k); // warm-up, not counted
        load(t, 8, false, Duration.ofSeconds(2), k);
      }
    }
    System.out.println();
    System.out.println(
        "| server | clients | requests | tokens/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |");
    System.out.println("|---|---|---|---|---|---|---|---|");
    for (int b : new int[] {1, 8, 32}) {
      for (Target t : targets) {
        Slice s = load(t, b, true, slice, clientKinds.get(0));
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
    double[] st = new double[targets.size() * kinds];
    double[] ns = new double[targets.size() * kinds];
    long[][] cpu = new long[targets.size() * kinds][4]; // streaming ns, tokens; non-streaming
    for (int r = 1; r <= rounds; r++) {
      for (int i = 0; i < targets.size(); i++) {
        for (int k = 0; k < kinds; k++) {
          Target t = targets.get(i);
          int at = i * kinds + k;
          Slice a = load(t, 32, true, slice, clientKinds.get(k));
          Slice b = load(t, 32, false, slice, clientKinds.get(k));
          st[at] += a.tokensPerSecond();
          ns[at] += b.tokensPerSecond();
          cpu[at][0] += a.serverCpuNs();
          cpu[at][1] += a.tokens();
          cpu[at][2] += b.serverCpuNs();
          cpu[at][3] += b.tokens();
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
    for (int i = 0; i < targets.size(); i++) {
      for (int k = 0; k < kinds; k++) {
        int at = i * kinds + k;
        System.out.printf(
            Locale.ROOT,
            "| all | %s | %s | %.1f | %.1f | **%.3f** | %.1f | %.1f | |%n",
            targets.get(i).label(),
            clientKinds.get(k),
            st[at] / rounds,
            ns[at] / rounds,
            st[at] / ns[at],
            cpu[at][0] < 0 ? Double.NaN : cpu[at][0] / 1e3 / Math.max(1, cpu[at][1]),
            cpu[at][2] < 0 ? Double.NaN : cpu[at][2] / 1e3 / Math.max(1, cpu[at][3]));
      }
    }
    System.out.printf(
        Locale.ROOT, "load at the end: %s%n", Files.readString(Path.of("/proc/loadavg")).trim());
  }

  private static long pct(long[] sorted, int p) {
    if (sorted.length == 0) {
      return 0;
    }
    int i = (int) Math.min(sorted.length - 1, Math.ceil(p / 100.0 * sorted.length) - 1);
    return sorted[Math.max(0, i)];
  }

  /**
   * {@code clients} threads loop requests for {@code len}; tokens are counted for requests that
   * finish inside the window (each client stops starting new ones at its end).
   */
  private Slice load(Target target, int clients, boolean stream, Duration len, String kind)
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
    AtomicLong tokens = new AtomicLong();
    AtomicLong requests = new AtomicLong();
    ExecutorService pool = Executors.newFixedThreadPool(clients);
    long cpuBefore = cpuNanos(target.process());
    long start = System.nanoTime();
    long end = start + len.toNanos();
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
                    if (raw != null) {
                      long[] last = {-1};
                      long n =
                          raw.post(
                              key,
                              body,
                              stream,
                              now -> {
                                if (last[0] < 0) {
                                  ttft.add(now - t0);
                                } else {
                                  gaps.add(now - last[0]);
                                }
                                last[0] = now;
                              });
                      tokens.addAndGet(n);
                    } else if (stream) {
                      HttpResponse<Stream<String>> r =
                          http.send(req, HttpResponse.BodyHandlers.ofLines());
                      long last = -1;
                      long n = 0;
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
                            ttft.add(now - t0);
                          } else {
                            gaps.add(now - last);
                          }
                          last = now;
                        }
                      }
                      if (r.statusCode() != 200) {
                        throw new IllegalStateException("status " + r.statusCode());
                      }
                      tokens.addAndGet(n);
                    } else {
                      HttpResponse<String> r = http.send(req, HttpResponse.BodyHandlers.ofString());
                      if (r.statusCode() != 200) {
                        throw new IllegalStateException(
                            "status " + r.statusCode() + " " + r.body());
                      }
                      tokens.addAndGet(ServerThroughput.completionTokens(r.body()));
                    }
                    requests.incrementAndGet();
                  }
                } finally {
                  if (raw != null) {
                    raw.close();
                  }
                }
                return null;
              }));
    }
    for (Future<?> f : fs) {
      f.get();
    }
    double seconds = (System.nanoTime() - start) / 1e9;
    long cpuAfter = cpuNanos(target.process());
    pool.shutdown();
    long[] t = ttft.stream().mapToLong(Long::longValue).sorted().toArray();
    long[] g = gaps.stream().mapToLong(Long::longValue).sorted().toArray();
    Arrays.sort(t);
    return new Slice(
        tokens.get(),
        seconds,
        requests.get(),
        t,
        g,
        cpuBefore < 0 || cpuAfter < 0 ? -1 : cpuAfter - cpuBefore);
  }
}
