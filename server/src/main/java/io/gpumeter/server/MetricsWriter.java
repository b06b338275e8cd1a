package io.gpumeter.server;

import io.gpumeter.batching.ReplicaRouter;
import io.gpumeter.billing.Billing;
import io.gpumeter.billing.LedgerStats;
import io.prometheus.metrics.config.EscapingScheme;
import io.prometheus.metrics.config.PrometheusProperties;
import io.prometheus.metrics.core.metrics.CounterWithCallback;
import io.prometheus.metrics.core.metrics.GaugeWithCallback;
import io.prometheus.metrics.expositionformats.ExpositionFormatWriter;
import io.prometheus.metrics.expositionformats.ExpositionFormats;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.util.Collection;
import java.util.function.LongSupplier;
import java.util.function.ToLongFunction;

/**
 * The {@code /metrics} exposition: registers, as callback metrics, the counters the schedulers, the
 * metering counters and the ledger keep anyway (nothing is counted twice, nothing is counted per
 * request to feed them), and writes the server's registry in the format the scraper asks for.
 *
 * <p>Every callback reads its source when scraped. Device time is exported in nanoseconds, as
 * measured; {@code measured = charged + system} holds whenever no step is in flight during the
 * scrape. Values are written as the client library writes them, as floating point ({@code 1.0},
 * {@code 2.5132744E7}): exact for integers up to 2^53 (104 days of device time in nanoseconds).
 */
final class MetricsWriter {
  private final PrometheusRegistry registry;
  private final ExpositionFormats formats;
  private final ExpositionFormatWriter text;

  /** The exposition of one scrape: the bytes and their content type. */
  record Exposition(ByteBuffer body, String contentType) {}

  /**
   * Registers the server's callback metrics in {@code metrics}' registry.
   *
   * @throws IllegalArgumentException if they were registered there already
   */
  MetricsWriter(
      Collection<ModelEndpoint> models,
      ServerMetrics metrics,
      Readiness readiness,
      Billing billing) {
    this.registry = metrics.registry();
    PrometheusProperties properties = metrics.properties();
    this.formats = ExpositionFormats.init(properties);
    this.text = formats.getPrometheusTextFormatWriter();
    new PerModel(registry, properties, models)
        .counter(
            "gpumeter_device_measured_nanoseconds_total",
            "Device time measured, requests and system work together.",
            r -> r.counters().snapshot().measuredNs())
        .counter(
            "gpumeter_device_charged_nanoseconds_total",
            "Device time charged to requests (sum of their shares of every step).",
            r -> r.counters().snapshot().chargedNs())
        .counter(
            "gpumeter_device_system_nanoseconds_total",
            "Device time of model load and warm-up: measured, never charged.",
            r -> r.counters().snapshot().systemNs())
        .counter("gpumeter_steps_total", "Model steps run.", r -> r.counters().snapshot().steps())
        .counter(
            "gpumeter_multi_sequence_steps_total",
            "Model steps that ran more than one sequence.",
            r -> r.counters().snapshot().multiSequenceSteps())
        .counter(
            "gpumeter_step_tokens_total",
            "Tokens processed by model steps.",
            r -> r.counters().snapshot().stepTokens())
        .counter(
            "gpumeter_step_sequences_total",
            "Sequences summed over model steps (divide by steps for the mean batch size).",
            r -> r.counters().snapshot().stepSequences())
        .gauge(
            "gpumeter_queue_length",
            "Requests waiting for admission.",
            r -> r.scheduler().stats().queued())
        .gauge(
            "gpumeter_running_sequences",
            "Sequences in the running batch.",
            r -> r.scheduler().stats().running())
        .gauge(
            "gpumeter_last_step_nanoseconds",
            "Measured device time of the last step.",
            r -> r.scheduler().stats().lastStepNs())
        .gauge(
            "gpumeter_last_step_sequences",
            "Sequences in the last step.",
            r -> r.scheduler().stats().lastBatchSize())
        .counter(
            "gpumeter_generations_completed_total",
            "Generations finished, whatever the way they ended.",
            r -> r.scheduler().stats().completed())
        .counter(
            "gpumeter_generations_rejected_total",
            "Submissions refused (queue full, too long, shutting down).",
            r -> r.scheduler().stats().rejected());

    counter(
        properties,
        "gpumeter_ledger_records_stored_total",
        "Usage records newly stored in the ledger.",
        () -> billing.ledgerStats().stored());
    counter(
        properties,
        "gpumeter_ledger_records_duplicate_total",
        "Usage records acknowledged as already stored (same request id).",
        () -> billing.ledgerStats().duplicates());
    counter(
        properties,
        "gpumeter_ledger_records_failed_total",
        "Usage records that could not be made durable.",
        () -> {
          LedgerStats l = billing.ledgerStats();
          return l.failed() + l.rejected();
        });
    gauge(
        properties,
        "gpumeter_ledger_queue_length",
        "Usage records waiting for the ledger writer.",
        () -> billing.ledgerStats().queued());
    gauge(
        properties,
        "gpumeter_ledger_accepting",
        "1 when the ledger can make new charges durable (else completions get 503).",
        () -> billing.health().ready() ? 1 : 0);
    gauge(
        properties,
        "gpumeter_ledger_degraded",
        "1 when the billing database is unavailable and charges go to the outbox.",
        () -> billing.health().degraded() ? 1 : 0);
    gauge(
        properties,
        "gpumeter_ledger_outbox_bytes",
        "Bytes of charges in the local outbox waiting to be replayed.",
        () -> billing.health().outboxBytes());
    gauge(
        properties,
        "gpumeter_ledger_outbox_max_bytes",
        "Size limit of the outbox.",
        () -> billing.health().outboxMaxBytes());
    counter(
        properties,
        "gpumeter_ledger_outboxed_records_total",
        "Usage records written to the outbox since start.",
        () -> billing.health().outboxedRecords());
    counter(
        properties,
        "gpumeter_ledger_replayed_records_total",
        "Usage records replayed from the outbox into the database since start.",
        () -> billing.health().replayedRecords());
    counter(
        properties,
        "gpumeter_ledger_dead_lettered_records_total",
        "Usage records the database refused on replay (set aside in dead-letter.log).",
        () -> billing.health().deadLetteredRecords());
    gauge(
        properties,
        "gpumeter_ledger_quarantined_segments",
        "Damaged outbox segments waiting in quarantine/ (counted from disk at start).",
        () -> billing.health().quarantinedSegments());
    gauge(
        properties,
        "gpumeter_ledger_quarantined_records",
        "Intact usage records in quarantined segments, waiting for replay.",
        () -> billing.health().quarantinedRecords());
    gauge(
        properties,
        "gpumeter_ledger_dead_letters_waiting",
        "Usage records waiting in dead-letter.log for replay (counted from disk at start).",
        () -> billing.health().deadLettersWaiting());
    gauge(
        properties,
        "gpumeter_commit_log_unshipped_records",
        "Charges acknowledged from the local commit log and not yet stored in the billing database"
            + " (0 with ledger.commit_point=postgres).",
        billing::unshippedRecords);
    gauge(
        properties,
        "gpumeter_commit_log_bytes",
        "Bytes the local commit log holds on disk, preallocated segments included; at"
            + " ledger.commit_log_max_bytes new charges are refused (0 with commit point postgres).",
        billing::commitLogBytes);
    gauge(
        properties,
        "gpumeter_ready",
        "1 when the server is ready for traffic.",
        () -> readiness.isReady() ? 1 : 0);
  }

  /**
   * Scrapes the registry and writes it for a scraper that sent {@code accept} (may be null):
   * OpenMetrics text when asked for, else the Prometheus text format 0.0.4 (also for protobuf,
   * which this server does not write).
   */
  Exposition write(String accept) {
    ExpositionFormatWriter writer = formats.findWriter(accept);
    if (!writer.isAvailable()) {
      writer = text;
    }
    ByteArrayOutputStream out = new ByteArrayOutputStream(8192);
    try {
      writer.write(out, registry.scrape(), EscapingScheme.fromAcceptHeader(accept));
    } catch (IOException e) {
      throw new UncheckedIOException(e); // a ByteArrayOutputStream does not throw
    }
    return new Exposition(ByteBuffer.wrap(out.toByteArray()), writer.getContentType());
  }

  private void counter(
      PrometheusProperties properties, String name, String help, LongSupplier value) {
    CounterWithCallback.builder(properties)
        .name(name)
        .help(help)
        .callback(cb -> cb.call(value.getAsLong()))
        .register(registry);
  }

  private void gauge(
      PrometheusProperties properties, String name, String help, LongSupplier value) {
    GaugeWithCallback.builder(properties)
        .name(name)
        .help(help)
        .callback(cb -> cb.call(value.getAsLong()))
        .register(registry);
  }

  /**
   * Callback metrics with one series per replica of each served model: {@code {model, device}},
   * where the device is the replica's label ({@code cpu}, {@code cpu:N}, {@code cuda:N}), so time
   * and load break down per device.
   */
  private record PerModel(
      PrometheusRegistry registry,
      PrometheusProperties properties,
      Collection<ModelEndpoint> models) {

    PerModel counter(String name, String help, ToLongFunction<ReplicaRouter.Replica> value) {
      CounterWithCallback.builder(properties)
          .name(name)
          .help(help)
          .labelNames("model", "device")
          .callback(
              cb -> {
                for (ModelEndpoint m : models) {
                  for (ReplicaRouter.Replica r : m.scheduler().replicas()) {
                    cb.call(value.applyAsLong(r), m.name(), r.device());
                  }
                }
              })
          .register(registry);
      return this;
    }

    PerModel gauge(String name, String help, ToLongFunction<ReplicaRouter.Replica> value) {
      GaugeWithCallback.builder(properties)
          .name(name)
          .help(help)
          .labelNames("model", "device")
          .callback(
              cb -> {
                for (ModelEndpoint m : models) {
                  for (ReplicaRouter.Replica r : m.scheduler().replicas()) {
                    cb.call(value.applyAsLong(r), m.name(), r.device());
                  }
                }
              })
          .register(registry);
      return this;
    }
  }
}
