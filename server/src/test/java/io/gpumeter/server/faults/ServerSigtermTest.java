package io.gpumeter.server.faults;

import static io.gpumeter.server.faults.FaultSupport.await;
import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.keys.ApiKeys;
import io.gpumeter.server.Main;
import io.gpumeter.server.TestServers;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import io.gpumeter.server.faults.FaultSupport.ServerProcess;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * A server process with the embedded PostgreSQL, stopped with SIGTERM while a completion is being
 * generated: the completion is answered 200, its charge is committed to PostgreSQL (not left in the
 * outbox: the database must outlive the drain), and the server stops PostgreSQL itself before it
 * exits. Before the fix, zonky's own JVM shutdown hook stopped PostgreSQL at the signal, in
 * parallel with the server's drain: the drain's charges then went to the outbox or failed (the 503
 * that was seen), or the watchdog restarted a PostgreSQL that nobody stopped afterwards.
 *
 * <p>The API key is made with {@code create-key} while the server runs: it connects to the server's
 * PostgreSQL (the data folder is locked by the server process) instead of failing.
 */
class ServerSigtermTest {
  private static final Pattern RUNNING =
      Pattern.compile("(?m)^gpumeter_running_sequences\\{[^}]*\\} (\\d+)(?:\\.0)?$");

  private static final int IN_FLIGHT = 4;

  @TempDir Path tmp;

  @Test
  @Timeout(150)
  void sigtermMidCompletionAnswersItAndCommitsItsChargeBeforePostgresStops() throws Exception {
    Path data = tmp.resolve("data");
    Path config = tmp.resolve("gpumeter.properties");
    Files.writeString(
        config,
        String.join(
            "\n",
            "host=127.0.0.1",
            "port=0",
            "device=cpu",
            "models.dir=" + TestServers.repoRoot().resolve("models"),
            "data.dir=" + data,
            "db.binary_cache_dir=" + TestServers.binaryCache(),
            "shutdown.grace=30s",
            ""));
    ServerProcess server =
        ServerProcess.start("sigterm", Map.of(), "serve", "--config", config.toString());
    List<String> requestIds = new ArrayList<>();
    try {
      int port = server.awaitReady(Duration.ofSeconds(90));

      // create-key beside the running server (cross-process: the folder's lock is the server's)
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      ByteArrayOutputStream err = new ByteArrayOutputStream();
      int status =
          Main.run(
              new String[] {"create-key", "--account", "sigterm", "--config", config.toString()},
              new PrintStream(out, true, StandardCharsets.UTF_8),
              new PrintStream(err, true, StandardCharsets.UTF_8));
      assertThat(status).as(err.toString(StandardCharsets.UTF_8)).isZero();
      String key = out.toString(StandardCharsets.UTF_8).trim();
      assertThat(ApiKeys.isWellFormed(key)).as(key).isTrue();

      // Several long generations, so the drain takes a while (a couple of seconds on 2 cores).
      Client client = new Client(port);
      List<CompletableFuture<Reply>> inflight = new ArrayList<>();
      for (int i = 0; i < IN_FLIGHT; i++) {
        inflight.add(
            client.postAsync(
                "/v1/completions", key, FaultSupport.completion("Once upon a time " + i, 600)));
      }
      await(
          () -> {
            try {
              Matcher m = RUNNING.matcher(client.get("/metrics", null).raw().body());
              return m.find() && Integer.parseInt(m.group(1)) == IN_FLIGHT;
            } catch (Exception e) {
              return false;
            }
          },
          Duration.ofSeconds(30),
          "the completions to be generating");
      server.terminate(); // SIGTERM

      for (CompletableFuture<Reply> f : inflight) {
        Reply r = f.get(60, TimeUnit.SECONDS);
        assertThat(r.status()).as(r.toString()).isEqualTo(200);
        assertThat(r.json().get("usage").get("completion_tokens").asInt()).isPositive();
        requestIds.add(r.header("x-request-id"));
      }
      assertThat(server.waitFor(Duration.ofSeconds(60))).as(server.output()).isIn(0, 143);
    } finally {
      server.kill();
    }

    // Did the server stop its PostgreSQL itself? (asserted last: the charge matters most)
    Path pgData = data.resolve("postgres");
    boolean postgresLeftRunning = Files.exists(pgData.resolve("postmaster.pid"));
    // The charge is in PostgreSQL itself: read it without starting Billing (no outbox replay).
    try (Database db =
        Database.start(
            DatabaseConfig.builder()
                .dataDirectory(pgData)
                .binaryCacheDirectory(TestServers.binaryCache())
                .build())) {
      try (Connection c = db.dataSource().getConnection();
          PreparedStatement ps =
              c.prepareStatement(
                  "SELECT count(*), min(status) FROM usage_records WHERE request_id = ?")) {
        for (String requestId : requestIds) {
          ps.setString(1, requestId);
          try (ResultSet rs = ps.executeQuery()) {
            rs.next();
            assertThat(rs.getInt(1)).as("rows in PostgreSQL for " + requestId).isEqualTo(1);
            assertThat(rs.getString(2)).isEqualTo("ok");
          }
        }
      }
    }
    assertThat(outboxSegments(data.resolve("outbox"))).as("nothing left in the outbox").isEmpty();
    assertThat(postgresLeftRunning)
        .as("postmaster.pid left behind: PostgreSQL not stopped")
        .isFalse();
  }

  /** Outbox segment files holding records. */
  private static List<Path> outboxSegments(Path dir) throws Exception {
    if (!Files.isDirectory(dir)) {
      return List.of();
    }
    try (var s = Files.list(dir)) {
      return s.filter(p -> p.getFileName().toString().startsWith("segment-"))
          .filter(
              p -> {
                try {
                  return Files.size(p) > 0;
                } catch (java.io.IOException e) {
                  return true;
                }
              })
          .toList();
    }
  }
}
