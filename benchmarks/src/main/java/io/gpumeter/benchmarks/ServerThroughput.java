package io.gpumeter.benchmarks;

import io.gpumeter.batching.StepListener;
import io.gpumeter.metering.StepTimerFactory;
import io.gpumeter.model.KvCache;
import io.gpumeter.model.LanguageModel;
import io.gpumeter.model.ModelStore;
import io.gpumeter.model.StepBatch;
import io.gpumeter.server.GpumeterServer;
import io.gpumeter.server.ServerConfig;
import java.io.IOException;
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
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.atomic.DoubleAdder;
import java.util.stream.Stream;

/**
 * Load tool (a plain main, not JMH): the real server and the real model on this machine's CPU, in
 * one run, with every compared pair measured side by side.
 *
 * <p>What it measures:
 *
 * <ol>
 *   <li><b>direct</b>: the model alone, driven by a loop of {@link LanguageModel#step} calls at
 *       batch B (1, 8, 32): each round prefills B prompts in one packed step, then runs {@code
 *       max_tokens - 1} decode steps at batch B, taking the argmax of each row on the host;
 *       tokens/s counts every generated token (the prefill step yields the first). The in-JVM
 *       limit: no HTTP, no scheduler, no billing.
 *   <li><b>server</b>: {@link GpumeterServer} in-process (127.0.0.1, port 0, a temporary data
 *       directory for its embedded PostgreSQL, default settings: {@code scheduler.max_running=32})
 *       under B = 1, 8, 32 concurrent clients. Each client is a thread looping {@code POST
 *       /v1/completions} over {@link HttpClient} (HTTP/1.1, keep-alive, one API key per client)
 *       with a short prompt, fixed {@code max_tokens} and a fresh seed; tokens/s sums {@code
 *       usage.completion_tokens} of the responses, each credited to the measured window in
 *       proportion to the part of its request's life (send to response) inside the window, after a
 *       ramp-up that is not counted; every client's last request is waited for. A {@link
 *       StepListener} on the server adds what its scheduler did in the window: steps/s, sequences
 *       and tokens per step, measured time per step, and the share of wall time the model was busy.
 *   <li><b>batching off</b>: a second server, {@code scheduler.max_running=1}, under 32 clients.
 *   <li><b>context</b>: decode time per token at batch 1 after prefilling 32 and 512 tokens.
 *   <li><b>overhead</b>: on the batching server, one client with {@code max_tokens=1}: the fixed
 *       cost of a request (HTTP, authentication, the batch window, the ledger's durable write) next
 *       to the one model step it needs.
 * </ol>
 *
 * <p>Side by side: the machine this was written on has 2 cores shared with other work, whose load
 * drifts by a factor of two within minutes. So the direct model and both servers are all started
 * first, and the run then goes in rounds; each round measures, for every B, a direct slice and a
 * server slice right after each other, then the batching-off server. Idle parts cost next to
 * nothing (the schedulers park; the clients exist only during their slice). Each figure is the
 * total over the rounds, and the table also shows the smallest and largest per-round ratio. A first
 * round with short slices warms everything up and is not counted.
 *
 * <p>Threads: the direct model is loaded on the main thread (as the server loads its model) and
 * stepped on one fresh thread (as the server's scheduler thread steps it): libtorch keeps
 * per-thread state (its intra-op thread team), and stepping on the loading thread behaves
 * differently. The clients run in the same JVM and on the same cores as the servers (loopback
 * only), so their HTTP and JSON work is part of what the server figures pay for.
 *
 * <p>Usage: {@code java -cp benchmarks.jar io.gpumeter.benchmarks.ServerThroughput [--models DIR]
 * [--batches 1,8,32] [--max-tokens 64] [--temperature 0.8] [--rounds 4] [--slice-s 4] [--ramp-s 1]
 * [--parts direct,server,nobatch,context,overhead]}
 */
public final class ServerThroughput {
  static final String[] PROMPTS = {
    "The ",
    "Once upon a time",
    "In the morning ",
    "She said",
    "It was a ",
    "We went to the ",
    "He looked at ",
    "There is a ",
    "After dinner ",
    "The old man ",
    "When the rain ",
    "I think ",
    "Tomorrow ",
    "They ",
    "A small ",
    "On the hill "
  };
  private static final String USAGE =
      "usage: ServerThroughput [--models DIR] [--batches 1,8,32] [--max-tokens 64]"
          + " [--temperature 0.8] [--rounds 4] [--slice-s 4] [--ramp-s 1]"
          + " [--parts direct,server,nobatch,context,overhead]";

  private final Path modelsDir;
  private final int[] batches;
  private final int maxB;
  private final int maxTokens;
  private final double temperature;
  private final int rounds;
  private final Duration slice;
  private final Duration ramp;
  private final List<String> parts;

  private ServerThroughput(Map<String, String> opts) {
    modelsDir = Path.of(opts.getOrDefault("models", "models"));
    batches =
        Arrays.stream(opts.getOrDefault("batches", "1,8,32").split(","))
            .mapToInt(Integer::parseInt)
            .toArray();
    maxB = Arrays.stream(batches).max().orElseThrow();
    maxTokens = Integer.parseInt(opts.getOrDefault("max-tokens", "64"));
    temperature = Double.parseDouble(opts.getOrDefault("temperature", "0.8"));
    rounds = Integer.parseInt(opts.getOrDefault("rounds", "4"));
    slice = seconds(opts.getOrDefault("slice-s", "4"));
    ramp = seconds(opts.getOrDefault("ramp-s", "1"));
    parts =
        List.of(opts.getOrDefault("parts", "direct,server,nobatch,context,overhead").split(","));
  }

  private static Duration seconds(String s) {
    return Duration.ofMillis((long) (Double.parseDouble(s) * 1000));
  }

  public static void main(String[] args) throws Exception {
    Map<String, String> opts = new LinkedHashMap<>();
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      if (!a.startsWith("--") || i + 1 >= args.length) {
        System.err.println(USAGE);
        System.exit(2);
      }
      opts.put(a.substring(2), args[++i]);
    }
    new ServerThroughput(opts).run();
    System.exit(0);
  }

  // ------------------------------------------------------------------ the run

  private void run() throws Exception {
    long t0 = System.nanoTime();
    out(
        "ServerThroughput: %s, %d cores, %s, JDK %s, models %s",
        Instant.now(),
        Runtime.getRuntime().availableProcessors(),
        cpuModel(),
        System.getProperty("java.version"),
        modelsDir.toAbsolutePath());
    out(
        "settings: parts %s, batches %s, max_tokens %d, temperature %.2f, %d rounds of %.1f s"
            + " slices (servers: + %.1f s ramp-up per slice), plus one warm-up round",
        parts,
        Arrays.toString(batches),
        maxTokens,
        temperature,
        rounds,
        slice.toMillis() / 1e3,
        ramp.toMillis() / 1e3);

    ExecutorService modelThread =
        Executors.newSingleThreadExecutor(r -> new Thread(r, "direct-model"));
    ModelStore store = null;
    Started on = null;
    Started off = null;
    Map<Integer, Direct> directs = new HashMap<>();
    try {
      store = ModelStore.open(modelsDir, "cpu", StepTimerFactory.hostOnly());
      LanguageModel model = store.models().get(0).model();
      out(
          "model %s: vocab %d, context %d, device %s",
          model.config().name(),
          model.config().vocabSize(),
          model.config().contextLength(),
          model.device());

      double[] ctx = null;
      if (parts.contains("context")) {
        ctx = onThread(modelThread, () -> decodeNanosPerToken(model, 32, 512));
        out(
            "context  decode at batch 1: %.3f ms/token after 32 tokens, %.3f ms/token after 512",
            ctx[0] / 1e6, ctx[1] / 1e6);
      }
      if (parts.contains("direct")) {
        for (int b : batches) {
          directs.put(b, onThread(modelThread, () -> new Direct(model, b, maxTokens)));
        }
      }
      if (parts.contains("server") || parts.contains("overhead")) {
        on = startServer(32);
      }
      if (parts.contains("nobatch")) {
        off = startServer(1);
      }

      Map<Integer, Tally> direct = new LinkedHashMap<>();
      Map<Integer, Tally> server = new LinkedHashMap<>();
      Tally nobatch = new Tally();
      for (int b : batches) {
        direct.put(b, new Tally());
        server.put(b, new Tally());
      }
      for (int round = 0; round <= rounds; round++) {
        boolean counted = round > 0;
        Duration len = counted ? slice : Duration.ofMillis(Math.max(1000, slice.toMillis() / 2));
        StringBuilder line = new StringBuilder(counted ? "round " + round + ":" : "warm-up round:");
        for (int b : batches) {
          double d = Double.NaN;
          if (!directs.isEmpty()) {
            Direct dir = directs.get(b);
            long[] r = onThread(modelThread, () -> dir.run(len));
            d = r[0] / (r[1] / 1e9);
            if (counted) {
              direct.get(b).add(r[0], r[1] / 1e9);
            }
            line.append(String.format(Locale.ROOT, "  direct@%d %.0f", b, d));
          }
          if (parts.contains("server")) {
            Load l = load(on, b, maxTokens, len);
            if (counted) {
              server.get(b).add(l);
            }
            line.append(String.format(Locale.ROOT, "  server@%d %.0f", b, l.tokensPerSecond()));
            if (!Double.isNaN(d)) {
              line.append(String.format(Locale.ROOT, " (%.2f)", l.tokensPerSecond() / d));
            }
          }
        }
        if (off != null) {
          Load l = load(off, maxB, maxTokens, len);
          if (counted) {
            nobatch.add(l);
          }
          line.append(String.format(Locale.ROOT, "  no-batch@%d %.0f", maxB, l.tokensPerSecond()));
        }
        out("%s", line);
      }

      Load overhead = null;
      if (parts.contains("overhead")) {
        overhead = load(on, 1, 1, slice.multipliedBy(2));
      }

      // ---- report
      out("");
      for (int b : batches) {
        if (parts.contains("server")) {
          out(
              "server@%d: %.1f tokens/s; %s",
              b, server.get(b).tokensPerSecond(), server.get(b).describe());
        }
      }
      if (off != null) {
        out("no-batch@%d: %.1f tokens/s; %s", maxB, nobatch.tokensPerSecond(), nobatch.describe());
      }
      if (overhead != null) {
        out(
            "overhead: 1 client, max_tokens 1: %.2f ms per request, of which %.2f ms in model steps;"
                + " %s",
            overhead.latencyNs() / 1e6 / Math.max(1, overhead.requests()),
            overhead.steps().measuredNs() / 1e6 / Math.max(1, overhead.requests()),
            overhead);
      }
      out("");
      if (!directs.isEmpty() && parts.contains("server")) {
        out(
            "| clients = batch B | direct model.step tokens/s | server tokens/s | server / direct"
                + " | per-round ratio min-max | target |");
        out("|---|---|---|---|---|---|");
        for (int b : batches) {
          Tally d = direct.get(b);
          Tally sv = server.get(b);
          double ratio = sv.tokensPerSecond() / d.tokensPerSecond();
          double[] range = ratioRange(sv.perRound, d.perRound);
          out(
              "| %d | %.1f | %.1f | %.2f | %.2f-%.2f | >= 0.90 %s |",
              b,
              d.tokensPerSecond(),
              sv.tokensPerSecond(),
              ratio,
              range[0],
              range[1],
              ratio >= 0.9 ? "met" : "MISSED");
        }
        out("");
      }
      out("| ratio | value | per-round min-max | target |");
      out("|---|---|---|---|");
      if (off != null && parts.contains("server")) {
        Tally sv = server.get(maxB);
        double ratio = sv.tokensPerSecond() / nobatch.tokensPerSecond();
        double[] range = ratioRange(sv.perRound, nobatch.perRound);
        out(
            "| batching on (max_running 32) / off (max_running 1), %d clients: %.1f / %.1f tokens/s"
                + " | %.2f | %.2f-%.2f | >= 4 %s |",
            maxB,
            sv.tokensPerSecond(),
            nobatch.tokensPerSecond(),
            ratio,
            range[0],
            range[1],
            ratio >= 4 ? "met" : "MISSED");
      }
      if (ctx != null) {
        double ratio = ctx[1] / ctx[0];
        out(
            "| decode ms/token at batch 1, 512 vs 32 tokens of context: %.3f / %.3f ms | %.2f | |"
                + " < 1.5 %s |",
            ctx[1] / 1e6, ctx[0] / 1e6, ratio, ratio < 1.5 ? "met" : "MISSED");
      }
      out("");
    } finally {
      for (Started s : new Started[] {on, off}) {
        if (s != null) {
          s.close();
        }
      }
      if (store != null) {
        ModelStore st = store;
        onThread(
            modelThread,
            () -> {
              directs.values().forEach(Direct::close);
              st.close();
              return null;
            });
      }
      modelThread.shutdown();
    }
    out("total run time %.0f s", (System.nanoTime() - t0) / 1e9);
  }

  private static double[] ratioRange(List<Double> num, List<Double> den) {
    double lo = Double.MAX_VALUE;
    double hi = 0;
    for (int i = 0; i < Math.min(num.size(), den.size()); i++) {
      double r = num.get(i) / den.get(i);
      lo = Math.min(lo, r);
      hi = Math.max(hi, r);
    }
    return new double[] {lo, hi};
  }

  private static <T> T onThread(ExecutorService thread, Callable<T> work) throws Exception {
    try {
      return thread.submit(work).get();
    } catch (ExecutionException e) {
      if (e.getCause() instanceof Exception ex) {
        throw ex;
      }
      throw e;
    }
  }

  // ------------------------------------------------------------------ direct model loop

  /**
   * Decode time per token at batch 1 after a prefill of {@code shortContext} and of {@code
   * longContext} tokens (fed in chunks of 128, as the scheduler would): per round, the mean time of
   * the 32 decode steps right after the prefill; rounds alternate between the two contexts so that
   * drifting load on the machine hits both alike; the median of 21 rounds each, after 2 warm-up
   * rounds each.
   */
  private double[] decodeNanosPerToken(LanguageModel model, int shortContext, int longContext) {
    int decodeSteps = 32;
    int rounds = 21;
    int vocab = model.config().vocabSize();
    if (longContext + decodeSteps >= model.config().contextLength()) {
      throw new IllegalStateException(
          "model context "
              + model.config().contextLength()
              + " is too short for "
              + longContext
              + " + "
              + decodeSteps);
    }
    int[] ids = new int[longContext + decodeSteps + 1];
    int[] text = model.tokenizer().encode(String.join(" ", PROMPTS).repeat(64));
    float[][] logits = new float[1][vocab];
    StepBatch batch = new StepBatch(128, 1);
    double[][] perToken = new double[2][rounds];
    try (KvCache cache = model.newCache(1)) {
      for (int r = -2; r < rounds; r++) {
        for (int which = 0; which < 2; which++) {
          int context = which == 0 ? shortContext : longContext;
          System.arraycopy(text, 0, ids, 0, context);
          for (int at = 0; at < context; at += 128) {
            batch.clear();
            batch.addSequence(0, ids, at, Math.min(128, context - at), at);
            model.step(batch, cache, logits);
          }
          ids[context] = argmax(logits[0], vocab);
          long start = System.nanoTime();
          for (int t = 0; t < decodeSteps; t++) {
            int pos = context + t;
            batch.clear();
            batch.addSequence(0, ids, pos, 1, pos);
            model.step(batch, cache, logits);
            ids[pos + 1] = argmax(logits[0], vocab);
          }
          if (r >= 0) {
            perToken[which][r] = (System.nanoTime() - start) / (double) decodeSteps;
          }
        }
      }
    }
    Arrays.sort(perToken[0]);
    Arrays.sort(perToken[1]);
    return new double[] {perToken[0][rounds / 2], perToken[1][rounds / 2]};
  }

  static int argmax(float[] row, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) {
      if (row[i] > row[best]) {
        best = i;
      }
    }
    return best;
  }

  // ------------------------------------------------------------------ server load

  private Started startServer(int maxRunning) throws IOException {
    Path data = Files.createTempDirectory("gpumeter-throughput-");
    long t0 = System.nanoTime();
    StepStats stats = new StepStats();
    GpumeterServer server =
        GpumeterServer.start(
            ServerConfig.builder()
                .host("127.0.0.1")
                .port(0)
                .modelsDir(modelsDir)
                .dataDir(data)
                .device("cpu")
                .set("scheduler.max_running", Integer.toString(maxRunning))
                .build(),
            stats);
    List<String> keys = new ArrayList<>();
    for (int i = 0; i < maxB; i++) {
      keys.add(server.billing().apiKeys().create("throughput-client-" + i).plaintext());
    }
    String model = server.schedulers().get(0).modelName();
    out(
        "started server (max_running %d) on port %d in %.1f s",
        maxRunning, server.port(), (System.nanoTime() - t0) / 1e9);
    return new Started(server, data, keys, model, stats);
  }

  /**
   * {@code clients} threads loop completions against {@code s} for {@link #ramp} (not counted) plus
   * {@code len}; counts responses that arrive inside the measured window, then waits for every
   * client to finish its last request, so the next slice starts on an idle server.
   */
  private Load load(Started s, int clients, int maxTokens, Duration len)
      throws InterruptedException {
    HttpClient http =
        HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(5))
            .build();
    URI uri = URI.create("http://127.0.0.1:" + s.server().port() + "/v1/completions");
    long measureFrom = System.nanoTime() + ramp.toNanos();
    long measureTo = measureFrom + len.toNanos();
    DoubleAdder tokens = new DoubleAdder();
    AtomicLong requests = new AtomicLong();
    AtomicLong latency = new AtomicLong();
    AtomicLong completedTokens = new AtomicLong();
    AtomicLong errors = new AtomicLong();
    AtomicReference<String> firstError = new AtomicReference<>();
    CountDownLatch done = new CountDownLatch(clients);
    for (int c = 0; c < clients; c++) {
      int client = c;
      Thread t =
          new Thread(
              () -> {
                try {
                  String key = s.keys().get(client);
                  int n = 0;
                  while (true) {
                    String prompt = PROMPTS[(client + n) % PROMPTS.length];
                    String body =
                        String.format(
                            Locale.ROOT,
                            "{\"model\":\"%s\",\"prompt\":\"%s\",\"max_tokens\":%d,"
                                + "\"temperature\":%.2f,\"seed\":%d}",
                            s.model(),
                            prompt,
                            maxTokens,
                            temperature,
                            seedCounter.incrementAndGet());
                    n++;
                    HttpRequest req =
                        HttpRequest.newBuilder(uri)
                            .timeout(Duration.ofSeconds(120))
                            .header("Authorization", "Bearer " + key)
                            .header("Content-Type", "application/json")
                            .POST(HttpRequest.BodyPublishers.ofString(body))
                            .build();
                    long sent = System.nanoTime();
                    if (sent >= measureTo) {
                      return;
                    }
                    HttpResponse<String> resp;
                    try {
                      resp = http.send(req, HttpResponse.BodyHandlers.ofString());
                    } catch (IOException e) {
                      errors.incrementAndGet();
                      firstError.compareAndSet(null, e.toString());
                      continue;
                    }
                    long got = System.nanoTime();
                    if (resp.statusCode() != 200) {
                      errors.incrementAndGet();
                      firstError.compareAndSet(null, resp.statusCode() + " " + resp.body());
                      continue;
                    }
                    // Credit the tokens to the window in proportion to the part of the request's
                    // life inside it (tokens are generated at an even pace while it runs), so
                    // long requests at the window's edges count for what they did inside it.
                    int generated = completionTokens(resp.body());
                    long overlap = Math.min(got, measureTo) - Math.max(sent, measureFrom);
                    if (overlap > 0) {
                      tokens.add(generated * (double) overlap / (got - sent));
                    }
                    if (got >= measureFrom && got < measureTo) {
                      requests.incrementAndGet();
                      completedTokens.addAndGet(generated);
                      latency.addAndGet(got - sent);
                    }
                  }
                } catch (InterruptedException e) {
                  Thread.currentThread().interrupt();
                } finally {
                  done.countDown();
                }
              },
              "throughput-client-" + c);
      t.setDaemon(true);
      t.start();
    }
    sleepUntil(measureFrom);
    StepStats.Snapshot before = s.stats().snapshot();
    sleepUntil(measureTo);
    StepStats.Snapshot during = s.stats().snapshot().minus(before);
    done.await();
    return new Load(
        clients,
        tokens.sum(),
        requests.get(),
        completedTokens.get(),
        latency.get(),
        errors.get(),
        len.toNanos() / 1e9,
        firstError.get(),
        during);
  }

  private final AtomicLong seedCounter = new AtomicLong();

  private static void sleepUntil(long nanoTime) throws InterruptedException {
    long left;
    while ((left = nanoTime - System.nanoTime()) > 0) {
      Thread.sleep(Math.max(1, left / 1_000_000));
    }
  }

  /** {@code usage.completion_tokens} of an OpenAI completion response, without a JSON tree. */
  static int completionTokens(String json) {
    String field = "\"completion_tokens\"";
    int at = json.indexOf(field);
    if (at < 0) {
      throw new IllegalStateException("no completion_tokens in " + json);
    }
    int i = json.indexOf(':', at + field.length()) + 1;
    while (json.charAt(i) == ' ') {
      i++;
    }
    int v = 0;
    while (i < json.length() && Character.isDigit(json.charAt(i))) {
      v = v * 10 + (json.charAt(i++) - '0');
    }
    return v;
  }

  // ------------------------------------------------------------------ helpers

  private void out(String format, Object... args) {
    System.out.println(String.format(Locale.ROOT, format, args));
    System.out.flush();
  }

  private static String cpuModel() {
    try (Stream<String> lines = Files.lines(Path.of("/proc/cpuinfo"))) {
      return lines
          .filter(l -> l.startsWith("model name"))
          .findFirst()
          .map(l -> l.substring(l.indexOf(':') + 1).trim())
          .orElse("unknown CPU");
    } catch (IOException | RuntimeException e) {
      return System.getProperty("os.arch");
    }
  }
}
