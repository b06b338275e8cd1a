package io.gpumeter.benchmarks;

import io.gpumeter.batching.ReplicaRouter;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.ReconciliationReport;
import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.model.ModelException;
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
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Load tool for several replicas of one model (issue 17), a plain main: the real server in-process
 * with one model served on the devices given ({@code --devices cpu} or {@code cpu,cpu} here, {@code
 * all} on a GPU node), under {@code --clients} concurrent HTTP clients for {@code --seconds}.
 * Prints completion tokens/s over the window, and per replica (device) the generations it finished,
 * the tokens its steps processed and its share of them; then reconciliation per device (drift must
 * be 0). With {@code --kill}, the last replica's next step is made to throw halfway through the
 * window (as a lost device would): the line then also says how many requests got an error and
 * whether the other replicas kept serving.
 *
 * <p>One configuration per process: libtorch's intra-op thread count is a process setting, and CPU
 * replicas set it to one each, so a one-replica figure must come from a process of its own. The
 * side-by-side comparison alternates processes (benchmarks/RESULTS.md gives the loop).
 *
 * <p>Usage: {@code ReplicaThroughput --models DIR --model NAME --devices LIST [--clients 32]
 * [--seconds 20] [--warmup 5] [--max-tokens 16] [--kill] [--min-replicas N]}. With fewer replicas
 * than {@code --min-replicas} it prints {@code RESULT check=replicas status=SKIP} and exits 0.
 */
public final class ReplicaThroughput {
  private static final Pattern TOKENS = Pattern.compile("\"completion_tokens\"\\s*:\\s*(\\d+)");

  private ReplicaThroughput() {}

  public static void main(String[] args) throws Exception {
    Map<String, String> opt = new LinkedHashMap<>();
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      if (!a.startsWith("--")) {
        throw new IllegalArgumentException("unexpected argument " + a);
      }
      if (a.equals("--kill")) {
        opt.put("kill", "true");
      } else {
        opt.put(a.substring(2), args[++i]);
      }
    }
    Path models = Path.of(opt.getOrDefault("models", "models"));
    String model = opt.getOrDefault("model", "demo-byte-lm");
    String devices = opt.getOrDefault("devices", "cpu");
    int clients = Integer.parseInt(opt.getOrDefault("clients", "32"));
    int seconds = Integer.parseInt(opt.getOrDefault("seconds", "20"));
    int warmup = Integer.parseInt(opt.getOrDefault("warmup", "5"));
    int maxTokens = Integer.parseInt(opt.getOrDefault("max-tokens", "16"));
    int minReplicas = Integer.parseInt(opt.getOrDefault("min-replicas", "1"));
    boolean kill = opt.containsKey("kill");

    // only the model asked for: a folder with a link to it
    Path dir = Files.createTempDirectory("replica-throughput");
    Path only = dir.resolve("models");
    Files.createDirectories(only);
    Files.createSymbolicLink(only.resolve(model), models.resolve(model).toAbsolutePath());
    Instant from = Instant.now().minusSeconds(1);
    GpumeterServer server =
        GpumeterServer.start(
            ServerConfig.builder()
                .host("127.0.0.1")
                .port(0)
                .modelsDir(only)
                .dataDir(dir.resolve("data"))
                .device("cpu")
                .devices(devices)
                .build(),
            StepListener.NONE);
    try {
      ReplicaRouter router = server.router(model).orElseThrow();
      List<ReplicaRouter.Replica> replicas = router.replicas();
      System.out.printf(
          "devices=%s replicas=%d (%s) clients=%d seconds=%d max_tokens=%d kill=%s%n",
          devices,
          replicas.size(),
          replicas.stream().map(ReplicaRouter.Replica::device).toList(),
          clients,
          seconds,
          maxTokens,
          kill);
      if (replicas.size() < minReplicas) {
        System.out.printf(
            "RESULT check=replicas status=SKIP reason=%d_replica(s)_fewer_than_%d%n",
            replicas.size(), minReplicas);
        return;
      }
      run(server, model, replicas, clients, warmup, seconds, maxTokens, kill, from);
    } finally {
      server.close();
    }
  }

  private static void run(
      GpumeterServer server,
      String model,
      List<ReplicaRouter.Replica> replicas,
      int clients,
      int warmup,
      int seconds,
      int maxTokens,
      boolean kill,
      Instant from)
      throws Exception {
    String key = server.billing().apiKeys().create("replica-throughput").plaintext();
    HttpClient http =
        HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(10))
            .build();
    URI uri = URI.create("http://127.0.0.1:" + server.port() + "/v1/completions");
    long start = System.nanoTime();
    long windowStart = start + Duration.ofSeconds(warmup).toNanos();
    long windowEnd = windowStart + Duration.ofSeconds(seconds).toNanos();
    AtomicLong tokens = new AtomicLong();
    AtomicLong ok = new AtomicLong();
    AtomicLong errors = new AtomicLong();
    List<Thread> threads = new ArrayList<>();
    for (int c = 0; c < clients; c++) {
      int client = c;
      Thread t =
          new Thread(
              () -> {
                int n = 0;
                while (System.nanoTime() < windowEnd) {
                  String body =
                      "{\"model\":\""
                          + model
                          + "\",\"prompt\":\"Client "
                          + client
                          + " request "
                          + n++
                          + ": \",\"max_tokens\":"
                          + maxTokens
                          + ",\"temperature\":0}";
                  try {
                    HttpResponse<String> r =
                        http.send(
                            HttpRequest.newBuilder(uri)
                                .timeout(Duration.ofSeconds(300))
                                .header("Authorization", "Bearer " + key)
                                .header("Content-Type", "application/json")
                                .POST(HttpRequest.BodyPublishers.ofString(body))
                                .build(),
                            HttpResponse.BodyHandlers.ofString());
                    long done = System.nanoTime();
                    if (r.statusCode() == 200) {
                      Matcher m = TOKENS.matcher(r.body());
                      if (done >= windowStart && done < windowEnd && m.find()) {
                        tokens.addAndGet(Long.parseLong(m.group(1)));
                        ok.incrementAndGet();
                      }
                    } else {
                      errors.incrementAndGet();
                    }
                  } catch (IOException e) {
                    errors.incrementAndGet();
                  } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                  }
                }
              },
              "client-" + c);
      threads.add(t);
      t.start();
    }
    // the window opens after the warm-up: per replica figures from here
    sleepUntil(windowStart);
    long[] completed0 = new long[replicas.size()];
    long[] tokens0 = new long[replicas.size()];
    for (int i = 0; i < replicas.size(); i++) {
      completed0[i] = replicas.get(i).scheduler().stats().completed();
      tokens0[i] = replicas.get(i).counters().snapshot().stepTokens();
    }
    ReplicaRouter.Replica victim = replicas.get(replicas.size() - 1);
    if (kill) {
      sleepUntil(windowStart + (windowEnd - windowStart) / 2);
      victim.scheduler().failNextStep(new ModelException("ReplicaThroughput --kill: device lost"));
    }
    sleepUntil(windowEnd);
    long[] completed = new long[replicas.size()];
    long[] stepTokens = new long[replicas.size()];
    for (int i = 0; i < replicas.size(); i++) {
      completed[i] = replicas.get(i).scheduler().stats().completed() - completed0[i];
      DeviceTimeCounters.Snapshot s = replicas.get(i).counters().snapshot();
      stepTokens[i] = s.stepTokens() - tokens0[i];
    }
    for (Thread t : threads) {
      t.join();
    }
    double secs = seconds;
    long allTokens = 0;
    for (long t : stepTokens) {
      allTokens += t;
    }
    System.out.printf(
        "completion tokens/s %.1f (%d completions in the window, %d errors)%n",
        tokens.get() / secs, ok.get(), errors.get());
    StringBuilder shares = new StringBuilder();
    for (int i = 0; i < replicas.size(); i++) {
      ReplicaRouter.Replica r = replicas.get(i);
      double share = allTokens == 0 ? 0 : 100.0 * stepTokens[i] / allTokens;
      System.out.printf(
          "  replica %d on %-7s state=%-7s generations=%d step_tokens=%d share=%.1f%%%n",
          i, r.device(), r.state(), completed[i], stepTokens[i], share);
      shares.append(i == 0 ? "" : ",").append(r.device()).append(':').append(Math.round(share));
    }
    // reconciliation per device, once the ledger has everything
    long quietBy = System.nanoTime() + Duration.ofSeconds(60).toNanos();
    while (server.billing().ledgerStats().queued() > 0 && System.nanoTime() < quietBy) {
      Thread.sleep(50);
    }
    ReconciliationReport report =
        server.billing().reconciliation().report(from, Instant.now().plusSeconds(61));
    long maxDrift = 0;
    for (ReconciliationReport.Line l : report.lines()) {
      System.out.printf(
          "  reconcile %s on %s: measured=%d charged=%d system=%d ledger=%d drift=%d%n",
          l.model(),
          l.device(),
          l.measuredNs(),
          l.chargedNs(),
          l.systemNs(),
          l.ledgerNs(),
          l.driftNs());
      maxDrift = Math.max(maxDrift, Math.abs(l.driftNs()));
    }
    boolean killedOk =
        !kill
            || (victim.state() == ReplicaRouter.State.FAILED
                && replicas.stream()
                    .filter(r -> r != victim)
                    .allMatch(r -> r.state() == ReplicaRouter.State.SERVING));
    String status = maxDrift == 0 && killedOk && ok.get() > 0 ? "OK" : "FAIL";
    System.out.printf(
        "RESULT check=replicas status=%s replicas=%d tokens_per_s=%.1f share=%s errors=%d"
            + " drift_ns=%d killed=%s%n",
        status,
        replicas.size(),
        tokens.get() / secs,
        shares,
        errors.get(),
        maxDrift,
        kill ? victim.device() + ":" + victim.state() : "none");
  }

  private static void sleepUntil(long nanoTime) throws InterruptedException {
    long left;
    while ((left = nanoTime - System.nanoTime()) > 0) {
      Thread.sleep(Math.max(1, Math.min(left / 1_000_000, 200)));
    }
  }
}
