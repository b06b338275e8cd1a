package io.gpumeter.server;

import io.gpumeter.batching.ReplicaRouter;
import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.model.LanguageModel;
import java.time.Instant;

/**
 * One served model as the HTTP layer sees it: the loaded model (its first replica), the router in
 * front of its replicas' schedulers, and the first replica's timer and counters (each replica's own
 * are on {@link ReplicaRouter#replicas()}).
 *
 * @param loadedAt when loading finished (the {@code created} field of {@code /v1/models})
 * @param loadNs measured device time of loading, all replicas (system time, never charged)
 * @param warmupNs measured device time of warm-up, all replicas (system time, never charged)
 */
record ModelEndpoint(
    String name,
    LanguageModel model,
    TimerInfo timer,
    DeviceTimeCounters counters,
    ReplicaRouter scheduler,
    Instant loadedAt,
    long loadNs,
    long warmupNs) {}
