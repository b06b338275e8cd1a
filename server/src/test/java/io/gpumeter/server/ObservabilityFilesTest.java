package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.yaml.snakeyaml.Yaml;

/**
 * The Grafana dashboard ({@code deploy/grafana/}) and the Prometheus alert rules ({@code
 * deploy/prometheus/}) name only metrics the server exports: every {@code gpumeter_*} name in their
 * queries (histogram series by their base name) is in server/README.md's {@code /metrics} list,
 * which {@link MetricsEndpointTest} checks against a real server's exposition in both directions.
 */
class ObservabilityFilesTest {
  private static final Path ROOT = TestServers.repoRoot();
  private static final Pattern METRIC = Pattern.compile("\\bgpumeter_[a-z_]+");
  private static final Pattern HISTOGRAM_SERIES = Pattern.compile("_(bucket|count|sum)$");

  @Test
  void theDashboardQueriesOnlyExportedMetricsAndCoversWhatItPromises() throws Exception {
    JsonNode dashboard =
        new ObjectMapper()
            .readTree(ROOT.resolve("deploy/grafana/gpumeter-dashboard.json").toFile());
    List<String> exprs = new ArrayList<>();
    for (JsonNode panel : dashboard.get("panels")) {
      assertThat(panel.get("targets")).as(panel.get("title").asText()).isNotEmpty();
      for (JsonNode target : panel.get("targets")) {
        exprs.add(target.get("expr").asText());
      }
    }
    Set<String> used = metricNames(exprs);
    assertThat(readmeMetricNames()).containsAll(used);
    // What the dashboard is for (deploy/README.md): device time, queue and step histograms, batch
    // size, ledger lag and outbox, errors.
    assertThat(used)
        .contains(
            "gpumeter_device_measured_nanoseconds_total",
            "gpumeter_queue_wait_seconds",
            "gpumeter_step_duration_seconds",
            "gpumeter_step_max_seconds",
            "gpumeter_sequences_per_step",
            "gpumeter_ledger_queue_length",
            "gpumeter_ledger_outbox_bytes",
            "gpumeter_http_responses_total");
  }

  @Test
  void theAlertRulesUseOnlyExportedMetrics() throws Exception {
    Map<String, Object> file =
        new Yaml().load(Files.readString(ROOT.resolve("deploy/prometheus/gpumeter-alerts.yaml")));
    List<String> exprs = new ArrayList<>();
    Set<String> alerts = new TreeSet<>();
    for (Object g : (List<?>) file.get("groups")) {
      for (Object r : (List<?>) ((Map<?, ?>) g).get("rules")) {
        Map<?, ?> rule = (Map<?, ?>) r;
        alerts.add((String) rule.get("alert"));
        exprs.add(String.valueOf(rule.get("expr")));
        assertThat(((Map<?, ?>) rule.get("labels")).containsKey("severity"))
            .as(rule.get("alert") + " has a severity label")
            .isTrue();
        assertThat(((Map<?, ?>) rule.get("annotations")).containsKey("summary"))
            .as(rule.get("alert") + " has a summary")
            .isTrue();
      }
    }
    Set<String> used = metricNames(exprs);
    assertThat(readmeMetricNames()).containsAll(used);
    assertThat(used)
        .contains(
            "gpumeter_ledger_accepting",
            "gpumeter_ledger_outbox_bytes",
            "gpumeter_ledger_records_failed_total",
            "gpumeter_ready");
    assertThat(alerts)
        .contains(
            "GpumeterLedgerNotAccepting",
            "GpumeterOutboxGrowing",
            "GpumeterChargesLost",
            "GpumeterReplicaNotReady");
  }

  @Test
  void aNameTheServerDoesNotExportIsCaught() throws Exception {
    Set<String> used = metricNames(List.of("rate(gpumeter_spend_micros_total[5m])"));
    assertThat(readmeMetricNames()).doesNotContainAnyElementsOf(used);
  }

  private static Set<String> metricNames(List<String> exprs) {
    Set<String> names = new TreeSet<>();
    for (String e : exprs) {
      Matcher m = METRIC.matcher(e);
      while (m.find()) {
        String name = m.group();
        if (name.endsWith("_seconds_bucket")
            || name.endsWith("_seconds_count")
            || name.endsWith("_seconds_sum")
            || name.endsWith("_step_bucket")
            || name.endsWith("_step_count")
            || name.endsWith("_step_sum")) {
          name = HISTOGRAM_SERIES.matcher(name).replaceFirst("");
        }
        names.add(name);
      }
    }
    assertThat(names).isNotEmpty();
    return names;
  }

  /** Every {@code gpumeter_*} name in the server README's {@code /metrics} paragraph. */
  private static Set<String> readmeMetricNames() throws Exception {
    String readme = Files.readString(ROOT.resolve("server/README.md"));
    int from = readme.indexOf("- `/metrics`:");
    int to = readme.indexOf("\n## ", from);
    assertThat(from).as("the /metrics paragraph of server/README.md").isPositive();
    Matcher m = METRIC.matcher(readme.substring(from, to));
    Set<String> names = new TreeSet<>();
    while (m.find()) {
      names.add(m.group());
    }
    return names;
  }
}
