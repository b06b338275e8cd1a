package io.gpumeter.server.tools;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.Logger;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.server.GpumeterServer;
import io.gpumeter.server.PathProbe;
import io.gpumeter.server.ServerConfig;
import io.gpumeter.server.TestServers;
import java.io.BufferedInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.slf4j.LoggerFactory;

/**
 * What the default ledger durability costs in completion latency over HTTP. Not a test: a main that
 * starts the real server (CPU, the repository's demo model, an embedded PostgreSQL) once with
 * {@code ledger.durability=durable} and once with {@code fast} in the same JVM, on the same data
 * folder, and drives each with {@code --clients} closed-loop clients sending {@code max_tokens: 1}
 * completions for {@code --seconds} (after a warm-up). Latency is measured by the client, from
 * sending the request to reading the whole response (HTTP/1.1 keep-alive).
 *
 * <p>Besides latency it reports the <b>overhead</b> of each request: its latency minus the model
 * step time the server measured for it ({@code usage.device_time_ns} in the response), that is
 * HTTP, scheduling, and the ledger write; and the throughput in requests and completion tokens per
 * second.
 *
 * <pre>
 * ./mvnw -o -q -pl server test-compile
 * ./mvnw -o -q -pl server dependency:build-classpath -Dmdep.includeScope=test \
 *     -Dmdep.outputFile=target/test-classpath.txt
 * java -cp server/target/test-classes:server/target/classes:$(cat server/target/test-classpath.txt) \
 *     io.gpumeter.server.tools.DurabilityLatency [--seconds 20] [--clients 4] [--warmup 3] \
 *     [--rounds 1] [--modes durable,fast] [--max-tokens 1] [--set key=value]... [--label NAME]
 *     [--http socket,jdk]
 * </pre>
 *
 * <p>{@code --http} chooses the client: {@code socket} (default) is one blocking keep-alive socket
 * per client thread ({@link SocketClient}), the fair measurement; {@code jdk} is {@code
 * java.net.http.HttpClient}, whose selector thread adds hand-offs to every exchange. Both may be
 * given; each mode then runs once per client.
 *
 * <p>{@code --modes} takes {@code durable}, {@code fast} and {@code durable-local} ({@code durable}
 * with {@code ledger.commit_point=local}: the answer waits for the local commit log's sync instead
 * of PostgreSQL's commit).
 *
 * <p>With {@code -Dgpumeter.probe.path=true} on the JVM the server's {@link PathProbe} stamps each
 * completion's path, and each run also prints a {@code path (...)} line: p50 and mean of each phase
 * (parse, admit, queue, device, step_host, hop, answer, server) over the measured window.
 *
 * <p>With {@code --rounds N} the modes alternate N times (durable, fast, durable, ...) and each
 * round is reported, so drift of the machine shows. {@code --set} passes any server setting
 * (repeatable, e.g. {@code --set scheduler.batch_window=2ms}); {@code --label} names the run in its
 * lines, so runs of two builds driven by a script can be told apart in one log.
 */
public final class DurabilityLatency {
  private DurabilityLatency() {}

  public static void main(String[] args) throws Exception {
    int seconds = 20;
    int clients = 4;
    int warmup = 3;
    int rounds = 1;
    int maxTokens = 1;
    String label = "";
    List<String> modes = List.of("durable", "fast");
    List<String> clientKinds = List.of("socket");
    Map<String, String> settings = new LinkedHashMap<>();
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--seconds" -> seconds = Integer.parseInt(args[++i]);
        case "--clients" -> clients = Integer.parseInt(args[++i]);
        case "--warmup" -> warmup = Integer.parseInt(args[++i]);
        case "--rounds" -> rounds = Integer.parseInt(args[++i]);
        case "--max-tokens" -> maxTokens = Integer.parseInt(args[++i]);
        case "--modes" -> modes = List.of(args[++i].split(","));
        case "--http" -> clientKinds = List.of(args[++i].split(","));
        case "--label" -> label = args[++i] + " ";
        case "--set" -> {
          String kv = args[++i];
          int eq = kv.indexOf('=');
          if (eq <= 0) {
            throw new IllegalArgumentException("--set wants key=value, got " + kv);
          }
          settings.put(kv.substring(0, eq), kv.substring(eq + 1));
        }
        default -> throw new IllegalArgumentException("unknown argument " + args[i]);
      }
    }
    ((Logger) LoggerFactory.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME)).setLevel(Level.WARN);
    Path data = Path.of("server", "target", "durability-latency").toAbsolutePath();
    if (!Files.isDirectory(data.getParent())) {
      data = Path.of("target", "durability-latency").toAbsolutePath();
    }
    Files.createDirectories(data);
    System.out.printf(
        "DurabilityLatency: %s%d clients, max_tokens %d, %d s warm-up + %d s per run, %d round(s),"
            + " %d cores, http clients %s, settings %s, data in %s%n",
        label,
        clients,
        maxTokens,
        warmup,
        seconds,
        rounds,
        Runtime.getRuntime().availableProcessors(),
        clientKinds,
        settings,
        data);
    List<String> lines = new ArrayList<>();
    for (int round = 1; round <= rounds; round++) {
      for (String variant : modes) {
        for (String kind : clientKinds) {
          Result r = run(data, variant, kind, clients, warmup, seconds, maxTokens, settings);
          String line =
              String.format(
                  Locale.ROOT,
                  "%sround %d %-13s %-6s requests %7d (%7.1f/s, %8.1f tokens/s)  latency p50 %7.3f ms"
                      + "  p90 %7.3f ms  p99 %7.3f ms  max %8.3f ms  |  overhead p50 %7.3f ms"
                      + "  p99 %7.3f ms  (device p50 %6.3f ms)  errors %d",
                  label,
                  round,
                  variant,
                  kind,
                  r.count,
                  r.count / (double) seconds,
                  r.tokens / (double) seconds,
                  ms(r.p50),
                  ms(r.p90),
                  ms(r.p99),
                  ms(r.max),
                  ms(r.overheadP50),
                  ms(r.overheadP99),
                  ms(r.deviceP50),
                  r.errors);
          System.out.println(line);
          lines.add(line);
        }
      }
    }
    System.out.println("--- summary");
    lines.forEach(System.out::println);
  }

  record Result(
      int count,
      long errors,
      long tokens,
      long p50,
      long p90,
      long p99,
      long max,
      long overheadP50,
      long overheadP99,
      long deviceP50) {}

  private static final Pattern DEVICE_NS = Pattern.compile("\"device_time_ns\":(\\d+)");
  private static final Pattern COMPLETION_TOKENS = Pattern.compile("\"completion_tokens\":(\\d+)");

  /** The first number after {@code pattern}'s key in a response body; fails if it is missing. */
  private static long field(Pattern pattern, String body) {
    Matcher m = pattern.matcher(body);
    if (!m.find()) {
      throw new IllegalStateException("no " + pattern + " in response " + body);
    }
    return Long.parseLong(m.group(1));
  }

  private static double ms(long ns) {
    return ns / 1e6;
  }

  private static Result run(
      Path data,
      String variant,
      String kind,
      int clients,
      int warmup,
      int seconds,
      int maxTokens,
      Map<String, String> settings)
      throws Exception {
    ServerConfig.Builder builder =
        ServerConfig.builder()
            .host("127.0.0.1")
            .port(0)
            .device("cpu")
            .modelsDir(TestServers.repoRoot().resolve("models"))
            .dataDir(data)
            .set("db.binary_cache_dir", data.getParent().resolve("pg-binaries").toString())
            .set("ledger.durability", variant.equals("durable-local") ? "durable" : variant);
    if (variant.equals("durable-local")) {
      builder.set("ledger.commit_point", "local"); // durable in the local commit log
    }
    settings.forEach(builder::set);
    if (!kind.equals("socket") && !kind.equals("jdk")) {
      throw new IllegalArgumentException("--http takes socket or jdk, got " + kind);
    }
    ServerConfig config = builder.build();
    try (GpumeterServer server = GpumeterServer.start(config, StepListener.NONE)) {
      CreatedApiKey key = server.billing().apiKeys().create("durability-latency");
      URI uri = URI.create("http://127.0.0.1:" + server.port() + "/v1/completions");
      HttpClient http =
          HttpClient.newBuilder()
              .version(HttpClient.Version.HTTP_1_1)
              .connectTimeout(Duration.ofSeconds(5))
              .build();
      long start = System.nanoTime();
      long measureFrom = start + Duration.ofSeconds(warmup).toNanos();
      long end = measureFrom + Duration.ofSeconds(seconds).toNanos();
      AtomicLong errors = new AtomicLong();
      AtomicLong tokens = new AtomicLong();
      List<long[]> perThread = new ArrayList<>();
      List<long[]> perThreadDevice = new ArrayList<>();
      List<Thread> threads = new ArrayList<>();
      int[] counts = new int[clients];
      for (int t = 0; t < clients; t++) {
        long[] samples = new long[500_000];
        long[] device = new long[samples.length];
        perThread.add(samples);
        perThreadDevice.add(device);
        int id = t;
        String body =
            "{\"model\":\"demo-byte-lm\",\"prompt\":\"Client "
                + t
                + " asks \",\"max_tokens\":"
                + maxTokens
                + ",\"temperature\":0}";
        Thread th =
            new Thread(
                () -> {
                  int n = 0;
                  try (SocketClient socket =
                      kind.equals("socket")
                          ? new SocketClient(server.port(), key.plaintext(), body)
                          : null) {
                    HttpRequest req =
                        HttpRequest.newBuilder(uri)
                            .timeout(Duration.ofSeconds(30))
                            .header("Authorization", "Bearer " + key.plaintext())
                            .header("Content-Type", "application/json")
                            .POST(HttpRequest.BodyPublishers.ofString(body))
                            .build();
                    while (true) {
                      long t0 = System.nanoTime();
                      if (t0 >= end) {
                        break;
                      }
                      try {
                        int status;
                        String text;
                        if (socket != null) {
                          status = socket.exchange();
                          text = socket.body();
                        } else {
                          HttpResponse<String> r =
                              http.send(req, HttpResponse.BodyHandlers.ofString());
                          status = r.statusCode();
                          text = r.body();
                        }
                        long t1 = System.nanoTime();
                        if (status != 200) {
                          errors.incrementAndGet();
                        } else if (t0 >= measureFrom && n < samples.length) {
                          device[n] = field(DEVICE_NS, text);
                          samples[n++] = t1 - t0;
                          tokens.addAndGet(field(COMPLETION_TOKENS, text));
                        }
                      } catch (Exception e) {
                        errors.incrementAndGet();
                      }
                    }
                  } catch (IOException e) {
                    errors.incrementAndGet();
                  }
                  counts[id] = n;
                },
                "client-" + t);
        threads.add(th);
        th.start();
      }
      // Server-side means over the measured window, from /metrics (histogram sums and counts
      // before and after): where the milliseconds of a request go.
      while (System.nanoTime() < measureFrom) {
        java.util.concurrent.locks.LockSupport.parkNanos(measureFrom - System.nanoTime());
      }
      Map<String, double[]> before = histograms(http, server.port());
      PathProbe.reset();
      for (Thread th : threads) {
        th.join();
      }
      Map<String, double[]> after = histograms(http, server.port());
      StringBuilder where =
          new StringBuilder("  where (" + variant + ", " + kind + ", server means):");
      for (String h : after.keySet()) {
        double[] a = after.get(h);
        double[] b = before.getOrDefault(h, new double[2]);
        double n = a[1] - b[1];
        where.append(
            String.format(
                Locale.ROOT,
                "  %s %.3f ms (n %d)",
                h,
                n == 0 ? 0 : (a[0] - b[0]) / n * 1e3,
                (long) n));
      }
      System.out.println(where);
      if (PathProbe.ENABLED) {
        System.out.println(probeLine(variant, kind));
      }
      int total = 0;
      for (int c : counts) {
        total += c;
      }
      long[] all = new long[total];
      long[] overhead = new long[total];
      long[] devices = new long[total];
      int at = 0;
      for (int t = 0; t < clients; t++) {
        long[] lat = perThread.get(t);
        long[] dev = perThreadDevice.get(t);
        for (int i = 0; i < counts[t]; i++) {
          all[at] = lat[i];
          devices[at] = dev[i];
          overhead[at] = lat[i] - dev[i];
          at++;
        }
      }
      Arrays.sort(all);
      Arrays.sort(overhead);
      Arrays.sort(devices);
      return new Result(
          total,
          errors.get(),
          tokens.get(),
          pct(all, 50),
          pct(all, 90),
          pct(all, 99),
          all.length == 0 ? 0 : all[all.length - 1],
          pct(overhead, 50),
          pct(overhead, 99),
          pct(devices, 50));
    }
  }

  /**
   * The {@link PathProbe}'s phases over the measured window ({@code -Dgpumeter.probe.path=true}):
   * p50 and mean of each, in milliseconds.
   */
  private static String probeLine(String variant, String kind) {
    StringBuilder line =
        new StringBuilder(
            "  path (" + variant + ", " + kind + ", n " + PathProbe.count() + ", p50/mean ms):");
    for (PathProbe.Phase p : PathProbe.Phase.values()) {
      line.append(
          String.format(
              Locale.ROOT,
              "  %s %.3f/%.3f",
              p.name().toLowerCase(Locale.ROOT),
              ms(PathProbe.quantile(p, 0.5)),
              ms(PathProbe.mean(p))));
    }
    return line.toString();
  }

  private static final Pattern HISTOGRAM =
      Pattern.compile(
          "^gpumeter_(queue_wait|time_to_first_token|step_duration|http_request_duration)"
              + "_seconds_(sum|count)(?:\\{[^}]*})? (\\S+)$",
          Pattern.MULTILINE);

  /** Histogram name → {sum of seconds, count}, summed over label sets, from {@code /metrics}. */
  private static Map<String, double[]> histograms(HttpClient http, int port) throws Exception {
    String text =
        http.send(
                HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/metrics")).build(),
                HttpResponse.BodyHandlers.ofString())
            .body();
    Map<String, double[]> out = new LinkedHashMap<>();
    Matcher m = HISTOGRAM.matcher(text);
    while (m.find()) {
      double[] v = out.computeIfAbsent(m.group(1), k -> new double[2]);
      v[m.group(2).equals("sum") ? 0 : 1] += Double.parseDouble(m.group(3));
    }
    return out;
  }

  /**
   * The fair client: one blocking keep-alive socket per client thread that writes a prebuilt
   * request and reads the status line, the headers and {@code Content-Length} bytes of body on the
   * calling thread. The JDK's {@code HttpClient} hands each exchange to its selector thread and
   * back, which costs wake-ups that are the client's, not the server's. Only what the server sends
   * is understood (a body framed by {@code Content-Length}); anything else is an {@link
   * IOException}.
   */
  static final class SocketClient implements AutoCloseable {
    private final Socket socket;
    private final InputStream in;
    private final OutputStream out;
    private final byte[] request;
    private byte[] buf = new byte[16384];
    private int bodyLength;

    SocketClient(int port, String bearer, String body) throws IOException {
      socket = new Socket();
      socket.setTcpNoDelay(true);
      socket.setSoTimeout(30_000);
      socket.connect(new InetSocketAddress("127.0.0.1", port), 5_000);
      in = new BufferedInputStream(socket.getInputStream(), 16384);
      out = socket.getOutputStream();
      byte[] json = body.getBytes(StandardCharsets.UTF_8);
      String crlf = "\r\n";
      String head =
          String.join(
              crlf,
              "POST /v1/completions HTTP/1.1",
              "Host: 127.0.0.1:" + port,
              "Authorization: Bearer " + bearer,
              "Content-Type: application/json",
              "Content-Length: " + json.length,
              "",
              "");
      byte[] h = head.getBytes(StandardCharsets.US_ASCII);
      request = Arrays.copyOf(h, h.length + json.length);
      System.arraycopy(json, 0, request, h.length, json.length);
    }

    /** Sends the request, reads the whole response, returns its status. */
    int exchange() throws IOException {
      out.write(request);
      out.flush();
      String status = line();
      if (!status.startsWith("HTTP/1.1 ") || status.length() < 12) {
        throw new IOException("bad status line: " + status);
      }
      int code = Integer.parseInt(status.substring(9, 12));
      int length = -1;
      for (String h = line(); !h.isEmpty(); h = line()) {
        int colon = h.indexOf(':');
        if (colon > 0 && h.substring(0, colon).equalsIgnoreCase("content-length")) {
          length = Integer.parseInt(h.substring(colon + 1).trim());
        }
      }
      if (length < 0) {
        throw new IOException("response without Content-Length");
      }
      if (buf.length < length) {
        buf = new byte[length];
      }
      int at = 0;
      while (at < length) {
        int r = in.read(buf, at, length - at);
        if (r < 0) {
          throw new EOFException("end of stream in a body");
        }
        at += r;
      }
      bodyLength = length;
      return code;
    }

    String body() {
      return new String(buf, 0, bodyLength, StandardCharsets.UTF_8);
    }

    private String line() throws IOException {
      StringBuilder sb = new StringBuilder(64);
      while (true) {
        int c = in.read();
        if (c < 0) {
          throw new EOFException("end of stream in a response head");
        }
        if (c == '\n') {
          int len = sb.length();
          if (len > 0 && sb.charAt(len - 1) == '\r') {
            sb.setLength(len - 1);
          }
          return sb.toString();
        }
        sb.append((char) c);
      }
    }

    @Override
    public void close() throws IOException {
      socket.close();
    }
  }

  /** Nearest-rank percentile. */
  private static long pct(long[] sorted, double p) {
    if (sorted.length == 0) {
      return 0;
    }
    int rank = (int) Math.ceil(p / 100.0 * sorted.length);
    return sorted[Math.max(0, Math.min(sorted.length - 1, rank - 1))];
  }
}
