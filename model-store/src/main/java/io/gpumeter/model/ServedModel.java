package io.gpumeter.model;

import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.StepTimer;
import java.util.Objects;

/**
 * A model the server serves: the loaded, warmed model, the timer for its device, and its running
 * device-time totals. Model load and warm-up are already recorded in {@code counters} as system
 * time ({@code loadNs + warmupNs == counters.snapshot().systemNs()} right after {@link
 * ModelStore#open}).
 *
 * @param model the loaded and warmed model
 * @param timer the step timer for the model's device; the scheduler times every step with it
 * @param counters measured, charged and system device time of this model
 * @param loadNs measured time of loading the model
 * @param warmupNs measured time of all warm-up passes
 */
public record ServedModel(
    LanguageModel model,
    StepTimer timer,
    DeviceTimeCounters counters,
    long loadNs,
    long warmupNs) {

  public ServedModel {
    Objects.requireNonNull(model, "model");
    Objects.requireNonNull(timer, "timer");
    Objects.requireNonNull(counters, "counters");
  }

  /** The served model name (the {@code model} field of requests). */
  public String name() {
    return model.config().name();
  }
}
