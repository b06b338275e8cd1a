package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.metering.StepReport;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.net.http.HttpRequest;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * {@code /metrics} on a real server after real completions: the exposition parses, every name the
 * server README lists is there (and nothing else is), and each histogram counted exactly what it
 * should: one latency per response, one queue wait per generation, one time to first token per
 * generation with a token, one step observation per step.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class MetricsEndpointTest {
  private static final int COMPLETIONS = 6;
  private static final Map<String, String> MODEL = Map.of("model", "demo-byte-lm", "device", "cpu");

  private static final AtomicLong stepsSeen = new AtomicLong();
  private static final AtomicLong lastStepNs = new AtomicLong();
  private static final Set<Long> stepNs = java.util.concurrent.ConcurrentHashMap.newKeySet();
  private static final StepListener countSteps =
      r -> {
        if (r.kind() == StepReport.Kind.CHARGED) {
          stepsSeen.incrementAndGet();
          stepNs.add(r.measuredNs());
          lastStepNs.set(r.measuredNs());
        }
      };

  private static GpumeterServer server;
  private static Client client;
  private static CreatedApiKey key;

  @BeforeAll
  static void start() throws Exception {
    server = GpumeterServer.start(TestServers.config("metrics").build(), countSteps);
    client = new Client(server.port());
    key = server.billing().apiKeys().create("metrics");
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  @Test
  void histogramsCountEveryRequestAndStepAndTheReadmeListsEveryName() throws Exception {
    List<CompletableFuture<Reply>> pending = new ArrayList<>();
    for (int i = 0; i < COMPLETIONS; i++) {
      pending.add(
          client.postAsync(
              "/v1/completions",
              key.plaintext(),
              "{\"model\":\"demo-byte-lm\",\"prompt\":\"Lists "
                  + i
                  + " \",\"max_tokens\":8,\"temperature\":0.8,\"seed\":"
                  + i
                  + "}"));
    }
    int withTokens = 0;
    for (CompletableFuture<Reply> f : pending) {
      Reply r = f.get(120, TimeUnit.SECONDS);
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
      if (r.json().get("usage").get("completion_tokens").asInt() > 0) {
        withTokens++;
      }
    }
    Reply unauthorized = client.post("/v1/completions", null, "{}");
    assertThat(unauthorized.status()).isEqualTo(401);
    assertThat(client.get("/healthz", null).status()).isEqualTo(200);

    // Every observation happens before the response it belongs to is written, and no step runs
    // after the last completion: no waiting needed.
    Reply scrape = client.get("/metrics", null);
    assertThat(scrape.status()).isEqualTo(200);
    assertThat(scrape.header("content-type")).isEqualTo("text/plain; version=0.0.4; charset=utf-8");
    PrometheusText p = PrometheusText.parse(scrape.raw().body());

    double steps = p.value("gpumeter_steps_total", MODEL);
    assertThat(steps).isPositive().isEqualTo(stepsSeen.get());
    assertThat(p.value("gpumeter_step_duration_seconds_count", MODEL)).isEqualTo(steps);
    assertThat(p.value("gpumeter_sequences_per_step_count", MODEL)).isEqualTo(steps);
    assertThat(p.value("gpumeter_sequences_per_step_sum", MODEL))
        .isEqualTo(p.value("gpumeter_step_sequences_total", MODEL));
    double chargedSeconds = p.value("gpumeter_device_charged_nanoseconds_total", MODEL) / 1e9;
    assertThat(p.value("gpumeter_step_duration_seconds_sum", MODEL))
        .isCloseTo(chargedSeconds, within(chargedSeconds * 1e-9));

    // The exact max-step gauge: one of the measured step times itself (not a bucket bound), at
    // least the last step's (certainly inside its 50-60 s window), at most the longest.
    double maxStep = p.value("gpumeter_step_max_seconds", MODEL);
    assertThat(maxStep).isGreaterThanOrEqualTo(lastStepNs.get() / 1e9);
    assertThat(stepNs.stream().map(ns -> ns / 1e9)).contains(maxStep);
    assertThat(p.types()).containsEntry("gpumeter_step_max_seconds", "gauge");

    assertThat(p.value("gpumeter_generations_completed_total", MODEL)).isEqualTo(COMPLETIONS);
    assertThat(p.value("gpumeter_queue_wait_seconds_count", MODEL)).isEqualTo(COMPLETIONS);
    assertThat(p.value("gpumeter_time_to_first_token_seconds_count", MODEL)).isEqualTo(withTokens);

    String latency = "gpumeter_http_request_duration_seconds_count";
    assertThat(p.value(latency, Map.of("route", "/v1/completions", "status_class", "2xx")))
        .isEqualTo(COMPLETIONS);
    assertThat(p.value(latency, Map.of("route", "/v1/completions", "status_class", "4xx")))
        .isEqualTo(1);
    assertThat(p.value(latency, Map.of("route", "/healthz", "status_class", "2xx"))).isEqualTo(1);
    // One latency per counted response (this scrape's own response is in neither yet); the other
    // test may have scraped before.
    double responses = p.sum("gpumeter_http_responses_total", Map.of());
    assertThat(p.sum(latency, Map.of())).isEqualTo(responses);
    assertThat(responses - p.sum(latency, Map.of("route", "/metrics"))).isEqualTo(COMPLETIONS + 2);
    assertThat(p.value("gpumeter_http_responses_total", Map.of("code", "401"))).isEqualTo(1);

    assertThat(p.value("gpumeter_ledger_accepting", Map.of())).isEqualTo(1);
    assertThat(p.value("gpumeter_ready", Map.of())).isEqualTo(1);
    assertThat(p.value("gpumeter_running_sequences", MODEL)).isEqualTo(0);

    Set<String> documented = readmeMetricNames();
    assertThat(documented).hasSizeGreaterThan(30);
    assertThat(new TreeSet<>(p.types().keySet())).isEqualTo(documented);
  }

  @Test
  void openMetricsWhenAskedForAndTextForProtobuf() throws Exception {
    Reply om =
        client.send(
            client
                .request("/metrics", null)
                .header("Accept", "application/openmetrics-text; version=1.0.0; charset=utf-8")
                .GET()
                .build());
    assertThat(om.status()).isEqualTo(200);
    assertThat(om.header("content-type")).startsWith("application/openmetrics-text");
    assertThat(om.raw().body()).endsWith("# EOF\n").contains("gpumeter_steps_total{");

    HttpRequest protobuf =
        client
            .request("/metrics", null)
            .header(
                "Accept",
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
                    + "encoding=delimited")
            .GET()
            .build();
    Reply text = client.send(protobuf);
    assertThat(text.status()).isEqualTo(200);
    assertThat(text.header("content-type")).startsWith("text/plain; version=0.0.4");
    PrometheusText.parse(text.raw().body());
  }

  /** Every {@code gpumeter_*} name in the server README's {@code /metrics} paragraph. */
  private static Set<String> readmeMetricNames() throws Exception {
    String readme = Files.readString(TestServers.repoRoot().resolve("server/README.md"));
    int from = readme.indexOf("- `/metrics`:");
    int to = readme.indexOf("\n## ", from);
    assertThat(from).as("the /metrics paragraph of server/README.md").isPositive();
    Matcher m = Pattern.compile("`(gpumeter_[a-z_]+)").matcher(readme.substring(from, to));
    Set<String> names = new TreeSet<>();
    while (m.find()) {
      names.add(m.group(1));
    }
    return names;
  }
}
