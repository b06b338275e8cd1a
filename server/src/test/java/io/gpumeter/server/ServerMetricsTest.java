package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import io.gpumeter.batching.FinishReason;
import io.gpumeter.batching.GenerationResult;
import io.gpumeter.batching.StepListener;
import io.gpumeter.metering.MutableStepReport;
import io.gpumeter.metering.StepReport;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import io.prometheus.metrics.expositionformats.PrometheusTextFormatWriter;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;

/** The histograms without a server: a driven clock, literal expectations. */
class ServerMetricsTest {
  private final AtomicLong now = new AtomicLong(1_000_000_000L);
  private final PrometheusRegistry registry = new PrometheusRegistry();
  private final ServerMetrics metrics = new ServerMetrics(registry, now::get);

  private PrometheusText scrape() throws Exception {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    PrometheusTextFormatWriter.create().write(out, registry.scrape());
    return PrometheusText.parse(out.toString(StandardCharsets.UTF_8));
  }

  private static final Map<String, String> MODEL = Map.of("model", "m", "device", "cpu");

  @Test
  void stepsFeedBothStepHistogramsAndArePassedOn() throws Exception {
    AtomicReference<String> seen = new AtomicReference<>("");
    StepListener next =
        r ->
            seen.set(
                seen.get()
                    + r.measuredNs()
                    + "/"
                    + r.sequences()
                    + "/"
                    + r.tokens()
                    + "/"
                    + r.failed()
                    + ";");
    StepListener l = new StepMetricsListener(metrics.addModel("m", "cpu"), next);
    MutableStepReport r = new MutableStepReport("m", "cpu", 4);
    l.onStep(StepReport.system("m", "cpu", 5_000_000)); // load/warm-up: passed on, not observed
    l.onStep(r.fillCharged(300_000, new long[] {300_000}, 1, 7, false)); // 0.3 ms: le 0.0005
    l.onStep(
        r.fillCharged(2_000_000, new long[] {1_000_000, 500_000, 500_000}, 3, 3, false)); // 2 ms
    l.onStep(
        r.fillCharged(
            40_000_000,
            new long[] {10_000_000, 10_000_000, 10_000_000, 10_000_000},
            4,
            4,
            true)); // 40 ms: le 0.05, failed steps too

    assertThat(seen.get())
        .isEqualTo("5000000/0/0/false;300000/1/7/false;2000000/3/3/false;40000000/4/4/true;");
    PrometheusText p = scrape();
    assertThat(p.value("gpumeter_step_duration_seconds_count", MODEL)).isEqualTo(3);
    assertThat(p.value("gpumeter_step_duration_seconds_sum", MODEL))
        .isCloseTo(0.0423, within(1e-12));
    assertThat(p.value("gpumeter_step_duration_seconds_bucket", with(MODEL, "le", "2.5E-4")))
        .isEqualTo(0);
    assertThat(p.value("gpumeter_step_duration_seconds_bucket", with(MODEL, "le", "5.0E-4")))
        .isEqualTo(1);
    assertThat(p.value("gpumeter_step_duration_seconds_bucket", with(MODEL, "le", "0.0025")))
        .isEqualTo(2);
    assertThat(p.value("gpumeter_step_duration_seconds_bucket", with(MODEL, "le", "0.025")))
        .isEqualTo(2);
    assertThat(p.value("gpumeter_step_duration_seconds_bucket", with(MODEL, "le", "0.05")))
        .isEqualTo(3);
    assertThat(p.value("gpumeter_sequences_per_step_count", MODEL)).isEqualTo(3);
    assertThat(p.value("gpumeter_sequences_per_step_sum", MODEL)).isEqualTo(8);
    assertThat(p.value("gpumeter_sequences_per_step_bucket", with(MODEL, "le", "1.0")))
        .isEqualTo(1);
    assertThat(p.value("gpumeter_sequences_per_step_bucket", with(MODEL, "le", "2.0")))
        .isEqualTo(1);
    assertThat(p.value("gpumeter_sequences_per_step_bucket", with(MODEL, "le", "4.0")))
        .isEqualTo(3);
  }

  @Test
  void firstTokenIsTimedFromAcceptanceOnceAndQueueWaitFromTheRecord() throws Exception {
    ModelMetrics m = metrics.addModel("m", "cpu");
    ModelMetrics.GenerationObserver a = m.newGeneration(now.get());
    now.addAndGet(30_000_000); // 30 ms to the first token
    a.onToken(65);
    now.addAndGet(500_000_000); // later tokens do not count
    a.onToken(66);
    a.accept(result(2_000_000), null); // 2 ms in the queue
    ModelMetrics.GenerationObserver b = m.newGeneration(now.get());
    b.accept(result(7_000_000), null); // ended without a token: queue wait only

    PrometheusText p = scrape();
    assertThat(p.value("gpumeter_time_to_first_token_seconds_count", MODEL)).isEqualTo(1);
    assertThat(p.value("gpumeter_time_to_first_token_seconds_sum", MODEL))
        .isCloseTo(0.03, within(1e-12));
    assertThat(p.value("gpumeter_queue_wait_seconds_count", MODEL)).isEqualTo(2);
    assertThat(p.value("gpumeter_queue_wait_seconds_sum", MODEL)).isCloseTo(0.009, within(1e-12));
    assertThat(p.value("gpumeter_queue_wait_seconds_bucket", with(MODEL, "le", "0.0025")))
        .isEqualTo(1);
    assertThat(p.value("gpumeter_queue_wait_seconds_bucket", with(MODEL, "le", "0.01")))
        .isEqualTo(2);
  }

  @Test
  void responsesAreCountedByCodeAndTimedByRouteAndStatusClass() throws Exception {
    HttpMetrics http = metrics.http();
    long start = now.get();
    now.addAndGet(4_000_000);
    http.responded("/v1/completions", 200, start);
    http.responded("/v1/models/demo-byte-lm", 404, start);
    http.responded("/v1/models/other", 200, start);
    http.responded("/no/such/path", 404, start);
    http.responded("/also/unknown", 405, start);
    http.responded("/metrics", 99, start); // not an HTTP status: ignored

    PrometheusText p = scrape();
    assertThat(p.value("gpumeter_http_responses_total", Map.of("code", "200"))).isEqualTo(2);
    assertThat(p.value("gpumeter_http_responses_total", Map.of("code", "404"))).isEqualTo(2);
    assertThat(p.value("gpumeter_http_responses_total", Map.of("code", "405"))).isEqualTo(1);
    assertThat(p.sum("gpumeter_http_responses_total", Map.of())).isEqualTo(5);
    String h = "gpumeter_http_request_duration_seconds_count";
    assertThat(p.value(h, Map.of("route", "/v1/completions", "status_class", "2xx"))).isEqualTo(1);
    assertThat(p.value(h, Map.of("route", "/v1/models/{id}", "status_class", "4xx"))).isEqualTo(1);
    assertThat(p.value(h, Map.of("route", "/v1/models/{id}", "status_class", "2xx"))).isEqualTo(1);
    assertThat(p.value(h, Map.of("route", "other", "status_class", "4xx"))).isEqualTo(2);
    assertThat(p.sum(h, Map.of())).isEqualTo(5);
    assertThat(
            p.value(
                "gpumeter_http_request_duration_seconds_bucket",
                Map.of("route", "other", "status_class", "4xx", "le", "0.005")))
        .isEqualTo(2);
    assertThat(
            p.value(
                "gpumeter_http_request_duration_seconds_bucket",
                Map.of("route", "other", "status_class", "4xx", "le", "0.0025")))
        .isEqualTo(0);
  }

  @Test
  void routesAreABoundedSet() {
    assertThat(HttpMetrics.ROUTES[HttpMetrics.route("/v1/completions")])
        .isEqualTo("/v1/completions");
    assertThat(HttpMetrics.ROUTES[HttpMetrics.route("/v1/models")]).isEqualTo("/v1/models");
    assertThat(HttpMetrics.ROUTES[HttpMetrics.route("/v1/models/x/y")])
        .isEqualTo("/v1/models/{id}");
    assertThat(HttpMetrics.ROUTES[HttpMetrics.route("/admin/reconcile")])
        .isEqualTo("/admin/reconcile");
    assertThat(HttpMetrics.ROUTES[HttpMetrics.route("/admin/other")]).isEqualTo("other");
    assertThat(HttpMetrics.ROUTES[HttpMetrics.route("/v1/completionsX")]).isEqualTo("other");
  }

  @Test
  void aModelIsAddedOnceAndMustBeAddedToBeLookedUp() {
    metrics.addModel("m", "cpu");
    assertThatThrownBy(() -> metrics.addModel("m", "cpu"))
        .isInstanceOf(IllegalStateException.class)
        .hasMessageContaining("m");
    assertThatThrownBy(() -> metrics.model("n"))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("n");
  }

  @Test
  void theParserRejectsBrokenExpositions() {
    assertThatThrownBy(() -> PrometheusText.parse("a 1\n"))
        .hasMessageContaining("outside its family");
    assertThatThrownBy(() -> PrometheusText.parse("# TYPE a counter\na{x=\"1} 1\n"))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> PrometheusText.parse("# TYPE a gauge\na 1\na 2\n"))
        .hasMessageContaining("repeated");
    assertThatThrownBy(
            () ->
                PrometheusText.parse(
                    "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
                        + "h_count 1\nh_sum 1\n"))
        .hasMessageContaining("cumulative");
    assertThatThrownBy(
            () ->
                PrometheusText.parse(
                    "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 2\nh_sum 1\n"))
        .hasMessageContaining("count");
  }

  private static Map<String, String> with(Map<String, String> labels, String k, String v) {
    Map<String, String> m = new HashMap<>(labels);
    m.put(k, v);
    return m;
  }

  private static GenerationResult result(long queueNs) {
    UsageRecord u =
        new UsageRecord(
            "r",
            1,
            1,
            "m",
            TimerInfo.cpu("test cpu"),
            "tokens",
            0,
            0,
            0,
            1,
            0,
            queueNs,
            0,
            UsageStatus.OK,
            Instant.EPOCH,
            Instant.EPOCH);
    return new GenerationResult(
        new int[0], FinishReason.STOP, u, CompletableFuture.completedFuture(null), null);
  }
}
