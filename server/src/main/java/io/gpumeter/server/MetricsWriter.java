package io.gpumeter.server;

import io.gpumeter.batching.SchedulerStats;
import io.gpumeter.billing.Billing;
import io.gpumeter.billing.LedgerHealth;
import io.gpumeter.billing.LedgerStats;
import io.gpumeter.metering.DeviceTimeCounters;
import java.util.Map;
import java.util.function.ToLongFunction;

/**
 * Prometheus text exposition (format 0.0.4), written by hand from the counters the scheduler, the
 * metering counters and the ledger keep anyway: nothing is counted twice and nothing is allocated
 * per request to feed it.
 *
 * <p>Device time is exported in integer nanoseconds, as measured; {@code measured = charged +
 * system} holds whenever no step is in flight.
 */
final class MetricsWriter {
  private final Map<String, ModelEndpoint> models;
  private final HttpMetrics http;
  private final Readiness readiness;
  private final Billing billing;

  MetricsWriter(
      Map<String, ModelEndpoint> models, HttpMetrics http, Readiness readiness, Billing billing) {
    this.models = models;
    this.http = http;
    this.readiness = readiness;
    this.billing = billing;
  }

  private record Sample(ModelEndpoint model, DeviceTimeCounters.Snapshot c, SchedulerStats s) {}

  String write() {
    Sample[] samples = new Sample[models.size()];
    int i = 0;
    for (ModelEndpoint m : models.values()) {
      samples[i++] = new Sample(m, m.counters().snapshot(), m.scheduler().stats());
    }
    StringBuilder out = new StringBuilder(4096);
    perModel(
        out,
        samples,
        "gpumeter_device_measured_nanoseconds_total",
        "counter",
        "Device time measured, requests and system work together.",
        s -> s.c.measuredNs());
    perModel(
        out,
        samples,
        "gpumeter_device_charged_nanoseconds_total",
        "counter",
        "Device time charged to requests (sum of their shares of every step).",
        s -> s.c.chargedNs());
    perModel(
        out,
        samples,
        "gpumeter_device_system_nanoseconds_total",
        "counter",
        "Device time of model load and warm-up: measured, never charged.",
        s -> s.c.systemNs());
    perModel(out, samples, "gpumeter_steps_total", "counter", "Model steps run.", s -> s.c.steps());
    perModel(
        out,
        samples,
        "gpumeter_multi_sequence_steps_total",
        "counter",
        "Model steps that ran more than one sequence.",
        s -> s.c.multiSequenceSteps());
    perModel(
        out,
        samples,
        "gpumeter_step_tokens_total",
        "counter",
        "Tokens processed by model steps.",
        s -> s.c.stepTokens());
    perModel(
        out,
        samples,
        "gpumeter_step_sequences_total",
        "counter",
        "Sequences summed over model steps (divide by steps for the mean batch size).",
        s -> s.c.stepSequences());
    perModel(
        out,
        samples,
        "gpumeter_queue_length",
        "gauge",
        "Requests waiting for admission.",
        s -> s.s.queued());
    perModel(
        out,
        samples,
        "gpumeter_running_sequences",
        "gauge",
        "Sequences in the running batch.",
        s -> s.s.running());
    perModel(
        out,
        samples,
        "gpumeter_last_step_nanoseconds",
        "gauge",
        "Measured device time of the last step.",
        s -> s.s.lastStepNs());
    perModel(
        out,
        samples,
        "gpumeter_last_step_sequences",
        "gauge",
        "Sequences in the last step.",
        s -> s.s.lastBatchSize());
    perModel(
        out,
        samples,
        "gpumeter_generations_completed_total",
        "counter",
        "Generations finished, whatever the way they ended.",
        s -> s.s.completed());
    perModel(
        out,
        samples,
        "gpumeter_generations_rejected_total",
        "counter",
        "Submissions refused (queue full, too long, shutting down).",
        s -> s.s.rejected());

    header(out, "gpumeter_http_responses_total", "counter", "HTTP responses sent, by status.");
    http.forEach(
        (status, n) ->
            out.append("gpumeter_http_responses_total{code=\"")
                .append(status)
                .append("\"} ")
                .append(n)
                .append('\n'));

    LedgerStats l = billing.ledgerStats();
    gauge(
        out,
        "gpumeter_ledger_records_stored_total",
        "counter",
        "Usage records newly stored in the ledger.",
        l.stored());
    gauge(
        out,
        "gpumeter_ledger_records_duplicate_total",
        "counter",
        "Usage records acknowledged as already stored (same request id).",
        l.duplicates());
    gauge(
        out,
        "gpumeter_ledger_records_failed_total",
        "counter",
        "Usage records that could not be made durable.",
        l.failed() + l.rejected());
    gauge(
        out,
        "gpumeter_ledger_queue_length",
        "gauge",
        "Usage records waiting for the ledger writer.",
        l.queued());
    LedgerHealth h = billing.health();
    gauge(
        out,
        "gpumeter_ledger_accepting",
        "gauge",
        "1 when the ledger can make new charges durable (else completions get 503).",
        h.ready() ? 1 : 0);
    gauge(
        out,
        "gpumeter_ledger_degraded",
        "gauge",
        "1 when the billing database is unavailable and charges go to the outbox.",
        h.degraded() ? 1 : 0);
    gauge(
        out,
        "gpumeter_ledger_outbox_bytes",
        "gauge",
        "Bytes of charges in the local outbox waiting to be replayed.",
        h.outboxBytes());
    gauge(
        out,
        "gpumeter_ledger_outbox_max_bytes",
        "gauge",
        "Size limit of the outbox.",
        h.outboxMaxBytes());
    gauge(
        out,
        "gpumeter_ledger_outboxed_records_total",
        "counter",
        "Usage records written to the outbox since start.",
        h.outboxedRecords());
    gauge(
        out,
        "gpumeter_ledger_replayed_records_total",
        "counter",
        "Usage records replayed from the outbox into the database since start.",
        h.replayedRecords());
    gauge(
        out,
        "gpumeter_ledger_dead_lettered_records_total",
        "counter",
        "Usage records the database refused on replay (set aside in dead-letter.log).",
        h.deadLetteredRecords());
    gauge(
        out,
        "gpumeter_ready",
        "gauge",
        "1 when the server is ready for traffic.",
        readiness.isReady() ? 1 : 0);
    return out.toString();
  }

  private static void perModel(
      StringBuilder out,
      Sample[] samples,
      String name,
      String type,
      String help,
      ToLongFunction<Sample> value) {
    header(out, name, type, help);
    for (Sample s : samples) {
      out.append(name).append("{model=\"");
      escape(out, s.model.name());
      out.append("\",device=\"");
      escape(out, s.model.timer().device());
      out.append("\"} ").append(value.applyAsLong(s)).append('\n');
    }
  }

  private static void gauge(StringBuilder out, String name, String type, String help, long v) {
    header(out, name, type, help);
    out.append(name).append(' ').append(v).append('\n');
  }

  private static void header(StringBuilder out, String name, String type, String help) {
    out.append("# HELP ").append(name).append(' ').append(help).append('\n');
    out.append("# TYPE ").append(name).append(' ').append(type).append('\n');
  }

  /** Label values: backslash, double quote and newline escaped; non-ASCII replaced. */
  private static void escape(StringBuilder out, String v) {
    for (int i = 0; i < v.length(); i++) {
      char c = v.charAt(i);
      switch (c) {
        case '\\' -> out.append("\\\\");
        case '"' -> out.append("\\\"");
        case '\n' -> out.append("\\n");
        default -> out.append(c < 0x20 || c > 0x7e ? '?' : c);
      }
    }
  }
}
