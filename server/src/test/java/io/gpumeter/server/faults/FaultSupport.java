package io.gpumeter.server.faults;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.db.Database;
import io.gpumeter.server.TestServers;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Array;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.BooleanSupplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.sql.DataSource;
import org.awaitility.Awaitility;

/**
 * Shared pieces of the fault tests: a PostgreSQL the test controls (embedded, fixed port, own
 * folder, no watchdog: the test kills and restarts it), a load of concurrent completions that
 * remembers what every request got, and the server as a child JVM.
 */
final class FaultSupport {
  private FaultSupport() {}

  static final String MODEL = "demo-byte-lm";

  /** The reconciliation report's line of one model (the server serves every bundled model). */
  static com.fasterxml.jackson.databind.JsonNode lineOf(
      com.fasterxml.jackson.databind.JsonNode report, String model) {
    for (com.fasterxml.jackson.databind.JsonNode line : report.get("lines")) {
      if (line.get("model").asText().equals(model)) {
        return line;
      }
    }
    throw new AssertionError("no reconciliation line for " + model + " in " + report);
  }

  static final ObjectMapper MAPPER = new ObjectMapper();

  static int freePort() throws IOException {
    try (ServerSocket s = new ServerSocket(0)) {
      s.setReuseAddress(true);
      return s.getLocalPort();
    }
  }

  /** A real PostgreSQL on {@code port} with its data in {@code dir}; the test restarts it. */
  static Database startPostgres(Path dir, int port) {
    return startPostgres(dir, port, null, null);
  }

  /**
   * As {@link #startPostgres(Path, int)}, listening on {@code listenAddress} too for clients in
   * {@code clientNetwork} (both null: loopback only); see {@code
   * DatabaseConfig.Builder#embeddedRemoteAccess}.
   */
  static Database startPostgres(Path dir, int port, String listenAddress, String clientNetwork) {
    return Database.start(
        DatabaseConfig.builder()
            .dataDirectory(dir)
            .binaryCacheDirectory(TestServers.binaryCache())
            .port(port)
            .maximumPoolSize(4)
            .embeddedWatchdogInterval(Duration.ZERO)
            .embeddedRemoteAccess(listenAddress, clientNetwork)
            .build());
  }

  /**
   * The URL of the server started by {@link #startPostgres} on {@code dir}, as its owner: the
   * password is read from the owner's password file in the data folder (tests only: a real
   * deployment keeps passwords out of URLs and command lines).
   */
  static String jdbcUrl(Path dir, int port) throws IOException {
    String password =
        Files.readString(dir.resolve("gpumeter-owner.password"), StandardCharsets.UTF_8).strip();
    return "jdbc:postgresql://127.0.0.1:" + port + "/postgres?password=" + password;
  }

  /** {@code kill -9} of the postmaster named in the first line of postmaster.pid. */
  static void killPostgres(Database db) throws Exception {
    long pid = db.embeddedPostmasterPid().orElseThrow();
    Process kill = new ProcessBuilder("kill", "-9", Long.toString(pid)).inheritIO().start();
    assertThat(kill.waitFor()).isZero();
    await(() -> !db.isEmbeddedRunning(), Duration.ofSeconds(10), "postmaster " + pid + " to die");
  }

  /**
   * Checks {@code condition} every 50 ms until it holds; fails, naming {@code what}, once {@code
   * timeout} has passed.
   */
  static void await(BooleanSupplier condition, Duration timeout, String what) {
    Awaitility.await(what)
        .atMost(timeout)
        .pollInterval(Duration.ofMillis(50))
        .until(condition::getAsBoolean);
  }

  /** request id → raw rows in usage_records, for the given ids (absent: none). */
  static Map<String, Integer> rowCounts(DataSource ds, Collection<String> ids) throws Exception {
    Map<String, Integer> out = new HashMap<>();
    try (Connection c = ds.getConnection()) {
      Array arr = c.createArrayOf("text", ids.toArray());
      try (PreparedStatement ps =
          c.prepareStatement(
              "SELECT request_id, count(*) FROM usage_records WHERE request_id = ANY (?)"
                  + " GROUP BY request_id")) {
        ps.setArray(1, arr);
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            out.put(rs.getString(1), rs.getInt(2));
          }
        }
      }
    }
    return out;
  }

  /** request id → rows, for every record of one API key. */
  static Map<String, Integer> rowsOfKey(DataSource ds, long keyId) throws Exception {
    Map<String, Integer> out = new HashMap<>();
    try (Connection c = ds.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT request_id, count(*) FROM usage_records WHERE api_key_id = ?"
                    + " GROUP BY request_id")) {
      ps.setLong(1, keyId);
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          out.put(rs.getString(1), rs.getInt(2));
        }
      }
    }
    return out;
  }

  static String completion(String prompt, int maxTokens) {
    return "{\"model\":\""
        + MODEL
        + "\",\"prompt\":\""
        + prompt
        + "\",\"max_tokens\":"
        + maxTokens
        + ",\"temperature\":0}";
  }

  /** What one request got: its HTTP status (0: no complete response) and x-request-id. */
  record Outcome(int status, String requestId, String code, String body) {}

  /**
   * {@code threads} clients, each sending completions one after the other (HTTP/1.1, keep-alive)
   * until {@link #stop()}. A request whose response never completed (connection reset, server
   * killed) is recorded with status 0.
   */
  static final class Load {
    private final HttpClient http =
        HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(5))
            .build();
    private final AtomicBoolean stop = new AtomicBoolean();
    private final List<Thread> threads = new ArrayList<>();
    final ConcurrentLinkedQueue<Outcome> outcomes = new ConcurrentLinkedQueue<>();

    Load(int port, String key, int threadCount, int maxTokens) {
      this("127.0.0.1", port, key, threadCount, maxTokens);
    }

    /** To the server on {@code host} (an IPv4 literal), not loopback. */
    Load(String host, int port, String key, int threadCount, int maxTokens) {
      URI uri = URI.create("http://" + host + ":" + port + "/v1/completions");
      for (int t = 0; t < threadCount; t++) {
        String prompt = "Client " + t + " says ";
        Thread th =
            new Thread(
                () -> {
                  while (!stop.get()) {
                    HttpRequest req =
                        HttpRequest.newBuilder(uri)
                            .timeout(Duration.ofSeconds(30))
                            .header("Authorization", "Bearer " + key)
                            .header("Content-Type", "application/json")
                            .POST(
                                HttpRequest.BodyPublishers.ofString(completion(prompt, maxTokens)))
                            .build();
                    try {
                      HttpResponse<String> r = http.send(req, HttpResponse.BodyHandlers.ofString());
                      String code = null;
                      if (r.statusCode() != 200) {
                        try {
                          code = MAPPER.readTree(r.body()).path("error").path("code").asText();
                        } catch (IOException e) {
                          code = "?";
                        }
                      }
                      outcomes.add(
                          new Outcome(
                              r.statusCode(),
                              r.headers().firstValue("x-request-id").orElse(null),
                              code,
                              r.statusCode() == 200 ? null : r.body()));
                    } catch (IOException e) {
                      outcomes.add(new Outcome(0, null, e.toString(), null));
                      try {
                        Thread.sleep(20);
                      } catch (InterruptedException ie) {
                        return;
                      }
                    } catch (InterruptedException e) {
                      return;
                    }
                  }
                },
                "load-" + t);
        th.setDaemon(true);
        threads.add(th);
      }
    }

    Load start() {
      threads.forEach(Thread::start);
      return this;
    }

    void stop() throws InterruptedException {
      stop.set(true);
      for (Thread t : threads) {
        t.join(60_000);
        assertThat(t.isAlive()).as(t.getName() + " stopped").isFalse();
      }
    }

    List<String> idsWithStatus(int status) {
      return outcomes.stream().filter(o -> o.status() == status).map(Outcome::requestId).toList();
    }

    long count(int status) {
      return outcomes.stream().filter(o -> o.status() == status).count();
    }

    String summary() {
      Map<String, Integer> by = new java.util.TreeMap<>();
      for (Outcome o : outcomes) {
        by.merge(o.status() + (o.code() == null ? "" : " " + o.code()), 1, Integer::sum);
      }
      return by.toString();
    }
  }

  /**
   * {@code java -cp <the test class path> io.gpumeter.server.Main ARGS} with {@code -D} settings,
   * its output (logback-test.xml: stdout) read by a thread; {@link #port()} is parsed from the
   * "gpumeter ready on http://host:port" line.
   */
  static final class ServerProcess {
    /** {@code -Dfaults.verbose=true}: echo every line of the child's log, not only problems. */
    private static final boolean VERBOSE = Boolean.getBoolean("faults.verbose");

    private static final Pattern READY = Pattern.compile("gpumeter ready on http://[^:]+:(\\d+)");

    final Process process;
    private final CountDownLatch ready = new CountDownLatch(1);
    private final ConcurrentLinkedQueue<String> tail = new ConcurrentLinkedQueue<>();
    private final Thread reader;
    private volatile int port = -1;

    private ServerProcess(Process p, String name) {
      this.process = p;
      this.reader =
          new Thread(
              () -> {
                try (BufferedReader r =
                    new BufferedReader(
                        new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
                  for (String line; (line = r.readLine()) != null; ) {
                    tail.add(line);
                    if (tail.size() > 200) {
                      tail.poll();
                    }
                    Matcher m = READY.matcher(line);
                    if (m.find()) {
                      port = Integer.parseInt(m.group(1));
                      ready.countDown();
                    }
                    if (VERBOSE || line.contains(" WARN ") || line.contains(" ERROR ")) {
                      System.out.println("[" + name + "] " + line);
                    }
                  }
                } catch (IOException e) {
                  // killed
                }
              },
              name + "-output");
      reader.setDaemon(true);
      reader.start();
    }

    static ServerProcess start(String name, Map<String, String> settings, String... args)
        throws IOException {
      return start(name, List.of(), settings, args);
    }

    /**
     * As {@link #start(String, Map, String...)}, with the JVM's command line after {@code launcher}
     * ({@code ip netns exec NAME}: on another network host); the launcher must exec the JVM in its
     * own process, so that {@link #kill()} reaches it.
     */
    static ServerProcess start(
        String name, List<String> launcher, Map<String, String> settings, String... args)
        throws IOException {
      String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
      String cp =
          System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
      List<String> cmd = new ArrayList<>(launcher);
      cmd.add(java);
      cmd.add("-Xmx768m");
      cmd.add("-XX:TieredStopAtLevel=1");
      settings.forEach((k, v) -> cmd.add("-Dgpumeter." + k + "=" + v));
      cmd.add("-cp");
      cmd.add(cp);
      cmd.add("io.gpumeter.server.Main");
      cmd.addAll(List.of(args));
      Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
      return new ServerProcess(p, name);
    }

    /** Waits for the ready line; fails with the process's last output. */
    int awaitReady(Duration timeout) throws InterruptedException {
      if (!ready.await(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
        process.destroyForcibly();
        throw new AssertionError(
            "server process not ready after " + timeout + "; last output:\n" + output());
      }
      return port;
    }

    int port() {
      return port;
    }

    String output() {
      return String.join("\n", tail);
    }

    /**
     * SIGTERM: the graceful shutdown path. Through the process handle: {@code Process.destroy()}
     * would also close our end of its output, and the rest of its log would be lost.
     */
    void terminate() {
      process.toHandle().destroy();
    }

    /** SIGKILL: no shutdown hook, nothing drained or closed. */
    void kill() throws InterruptedException {
      process.toHandle().destroyForcibly();
      process.waitFor(30, TimeUnit.SECONDS);
    }

    int waitFor(Duration timeout) throws InterruptedException {
      if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
        process.destroyForcibly();
        throw new AssertionError("server process did not exit in " + timeout + ":\n" + output());
      }
      reader.join(5_000);
      return process.exitValue();
    }
  }
}
