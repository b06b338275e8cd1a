package io.gpumeter.model;

import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.StepReport;
import io.gpumeter.metering.StepTimer;
import java.util.List;
import java.util.Objects;

/**
 * A model the server serves: the loaded, warmed model, the timer for its device, and its running
 * device-time totals. Model load and warm-up are measured as system steps: each one's {@link
 * StepReport} is already recorded in {@code counters} ({@code loadNs + warmupNs ==
 * counters.snapshot().systemNs()} right after {@link ModelStore#open}) and kept in {@code
 * systemReports}, for the server to hand once to its reconciliation feed (never again to the
 * counters).
 *
 * @param model the loaded and warmed model
 * @param timer the step timer for the model's device; the scheduler times every step with it
 * @param counters measured, charged and system device time of this model
 * @param loadNs measured time of loading the model
 * @param warmupNs measured time of all warm-up passes
 * @param systemReports the system step reports of load and warm-up, in order; their measured time
 *     sums to {@code loadNs + warmupNs}
 */
public record ServedModel(
    LanguageModel model,
    StepTimer timer,
    DeviceTimeCounters counters,
    long loadNs,
    long warmupNs,
    List<StepReport> systemReports) {

  public ServedModel {
    Objects.requireNonNull(model, "model");
    Objects.requireNonNull(timer, "timer");
    Objects.requireNonNull(counters, "counters");
    systemReports = List.copyOf(systemReports);
    long sum = 0;
    for (StepReport r : systemReports) {
      if (r.kind() != StepReport.Kind.SYSTEM) {
        throw new IllegalArgumentException("not a system step: " + r);
      }
      sum += r.measuredNs();
    }
    if (sum != loadNs + warmupNs) {
      throw new IllegalArgumentException(
          "system reports sum to " + sum + " ns, load + warm-up is " + (loadNs + warmupNs));
    }
  }

  /** The served model name (the {@code model} field of requests). */
  public String name() {
    return model.config().name();
  }
}
