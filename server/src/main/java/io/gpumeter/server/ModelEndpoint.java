package io.gpumeter.server;

import io.gpumeter.batching.ContinuousScheduler;
import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.model.LanguageModel;
import java.time.Instant;

/**
 * One served model as the HTTP layer sees it: the loaded model, its scheduler and its counters.
 *
 * @param loadedAt when loading finished (the {@code created} field of {@code /v1/models})
 * @param loadNs measured device time of loading (system time, never charged)
 * @param warmupNs measured device time of warm-up (system time, never charged)
 */
record ModelEndpoint(
    String name,
    LanguageModel model,
    TimerInfo timer,
    DeviceTimeCounters counters,
    ContinuousScheduler scheduler,
    Instant loadedAt,
    long loadNs,
    long warmupNs) {}
