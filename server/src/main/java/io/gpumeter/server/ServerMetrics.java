package io.gpumeter.server;

import io.gpumeter.metering.Ticker;
import io.prometheus.metrics.config.PrometheusProperties;
import io.prometheus.metrics.core.metrics.GaugeWithCallback;
import io.prometheus.metrics.core.metrics.Histogram;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The server's metrics: one {@link PrometheusRegistry}, owned by the server (never the client's
 * global default registry), holding the HTTP metrics, the generation and step histograms, and the
 * callback metrics {@link MetricsWriter} adds over the counters the schedulers, the metering
 * counters and the ledger keep anyway (so nothing is counted twice).
 *
 * <p>Histograms have classic buckets only: {@code /metrics} speaks the text formats, which cannot
 * carry native buckets, so keeping them would cost every observation for nothing. Exemplars are off
 * (no tracing here). Builders get explicit default {@link PrometheusProperties}, so no {@code
 * prometheus.properties} file or system property changes the server's metrics.
 */
final class ServerMetrics {
  /** Time to first token, seconds: a few decode steps on a GPU up to a long queue on a CPU. */
  static final double[] TIME_TO_FIRST_TOKEN_BUCKETS = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60
  };

  /** Queue wait, seconds: admission at the next step (sub-millisecond) up to a full queue. */
  static final double[] QUEUE_WAIT_BUCKETS = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30
  };

  /** Measured device time of one step, seconds: 100 µs (small decode on a GPU) up to 1 s. */
  static final double[] STEP_DURATION_BUCKETS = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1
  };

  /** Sequences in one step: powers of two up to 256 running sequences. */
  static final double[] SEQUENCES_PER_STEP_BUCKETS = {1, 2, 4, 8, 16, 32, 64, 128, 256};

  private final PrometheusRegistry registry;
  private final PrometheusProperties properties;
  private final Ticker ticker;
  private final HttpMetrics http;
  private final Histogram timeToFirstToken;
  private final Histogram queueWait;
  private final Histogram stepDuration;
  private final Histogram sequencesPerStep;
  private final Map<String, ModelMetrics> models = new ConcurrentHashMap<>();
  private final BudgetMetrics budget = new BudgetMetrics();

  /**
   * Registers the HTTP metrics and the generation histograms in {@code registry}.
   *
   * @param ticker the clock of request latency and time to first token
   * @throws IllegalArgumentException if {@code registry} already holds one of these names
   */
  ServerMetrics(PrometheusRegistry registry, Ticker ticker) {
    this.registry = Objects.requireNonNull(registry, "registry");
    this.ticker = Objects.requireNonNull(ticker, "ticker");
    this.properties = PrometheusProperties.builder().build();
    this.http = new HttpMetrics(registry, properties, ticker);
    this.timeToFirstToken =
        histogram(
            "gpumeter_time_to_first_token_seconds",
            "Time from accepting a completion request to its first generated token (generations"
                + " that produce none are not observed).",
            TIME_TO_FIRST_TOKEN_BUCKETS);
    this.queueWait =
        histogram(
            "gpumeter_queue_wait_seconds",
            "Time from submission to the scheduler to the generation's first step (to its end if"
                + " it never ran), for every generation.",
            QUEUE_WAIT_BUCKETS);
    this.stepDuration =
        histogram(
            "gpumeter_step_duration_seconds",
            "Measured device time of each model step.",
            STEP_DURATION_BUCKETS);
    this.sequencesPerStep =
        histogram(
            "gpumeter_sequences_per_step",
            "Sequences in each model step (the batch size).",
            SEQUENCES_PER_STEP_BUCKETS);
    GaugeWithCallback.builder(properties)
        .name("gpumeter_step_max_seconds")
        .help(
            "Longest model step (measured device time, exact, not bucketed) of the last 50-60 s;"
                + " 0 when none ran.")
        .labelNames("model", "device")
        .callback(
            cb -> {
              for (Map.Entry<String, ModelMetrics> m : models.entrySet()) {
                cb.call(m.getValue().maxStepNs() / 1e9, m.getKey(), m.getValue().device());
              }
            })
        .register(registry);
    budget.register(registry, properties);
  }

  private Histogram histogram(String name, String help, double[] buckets) {
    return Histogram.builder(properties)
        .name(name)
        .help(help)
        .labelNames("model", "device")
        .classicOnly()
        .classicUpperBounds(buckets)
        .withoutExemplars()
        .register(registry);
  }

  PrometheusRegistry registry() {
    return registry;
  }

  PrometheusProperties properties() {
    return properties;
  }

  HttpMetrics http() {
    return http;
  }

  /** The budget reservation and settlement counters. */
  BudgetMetrics budget() {
    return budget;
  }

  /**
   * Creates the series of a served model (they show, at zero, from now on).
   *
   * @throws IllegalStateException if the model was added already
   */
  ModelMetrics addModel(String model, String device) {
    ModelMetrics m =
        new ModelMetrics(
            ticker,
            timeToFirstToken.labelValues(model, device),
            queueWait.labelValues(model, device),
            stepDuration.labelValues(model, device),
            sequencesPerStep.labelValues(model, device),
            device);
    if (models.putIfAbsent(model, m) != null) {
      throw new IllegalStateException("model " + model + " already has metrics");
    }
    return m;
  }

  /**
   * The series of a model: added as by {@link #addModel} the first time, the same series again when
   * a model of that name is loaded after being unloaded.
   */
  ModelMetrics modelMetrics(String model, String device) {
    ModelMetrics m = models.get(model);
    return m != null ? m : addModel(model, device);
  }

  /**
   * The series of a model added with {@link #addModel}.
   *
   * @throws IllegalArgumentException if it was not
   */
  ModelMetrics model(String model) {
    ModelMetrics m = models.get(model);
    if (m == null) {
      throw new IllegalArgumentException("no metrics for model " + model);
    }
    return m;
  }
}
