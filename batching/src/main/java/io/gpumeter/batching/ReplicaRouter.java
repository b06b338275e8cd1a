package io.gpumeter.batching;

import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.StepTimer;
import io.gpumeter.metering.Ticker;
import io.gpumeter.metering.UsageSink;
import io.gpumeter.model.LanguageModel;
import java.time.Clock;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The replicas of one model, one per device, behind one {@link GenerationService}: each replica is
 * the model loaded on its device with its own {@link ContinuousScheduler} (thread, KV cache, step
 * timer, counters); the router picks one per request.
 *
 * <p><b>Routing:</b> a request goes to the replica in rotation with the fewest waiting tokens
 * ({@link ContinuousScheduler#waitingTokens()}), then the fewest running sequences; ties go to the
 * next replica in turn, so that requests arriving one at a time on an idle model also spread. A
 * request stays on its replica from submission to its record: its time is measured and split on
 * that device only.
 *
 * <p><b>Fairness:</b> the replicas share one {@link KeyShares}, so a key's share of the queue
 * ({@link SchedulerConfig#maxQueuedPerKey()}) holds for the model as a whole; each replica queues
 * per key and admits keys in turn as a single scheduler does. The queue capacity is per replica.
 *
 * <p><b>Failure:</b> a replica whose model step fails (a model error, a lost device) is taken out
 * of rotation at that step ({@link ContinuousScheduler#fail}, called from its step listener on its
 * own thread): every request on it, running or waiting, ends with a {@link ReplicaFailedException}
 * and is charged for the steps it ran; the others keep serving. The last replica in rotation is
 * never taken out (there would be nowhere to send work): as with a single scheduler, a failed step
 * fails only its own sequences there. {@link #replicas()} tells each replica's state ({@code
 * /readyz}).
 *
 * <p><b>Concurrency:</b> {@link #submit} runs on any thread and reads each replica's figures
 * (atomics); the rotation state is a volatile flag per replica, changed under the router's lock.
 */
public final class ReplicaRouter implements GenerationService, AutoCloseable {
  private static final Logger log = LoggerFactory.getLogger(ReplicaRouter.class);

  /**
   * What one replica runs on.
   *
   * @param model the model loaded and warmed on the replica's device
   * @param timer the step timer of that device (its label names the device)
   * @param counters that device's time counters
   * @param config the replica's scheduler settings
   * @param listener sees the replica's step reports (reconciliation, metrics)
   */
  public record ReplicaSpec(
      LanguageModel model,
      StepTimer timer,
      DeviceTimeCounters counters,
      SchedulerConfig config,
      StepListener listener) {
    public ReplicaSpec {
      Objects.requireNonNull(model, "model");
      Objects.requireNonNull(timer, "timer");
      Objects.requireNonNull(counters, "counters");
      Objects.requireNonNull(config, "config");
      Objects.requireNonNull(listener, "listener");
    }
  }

  /** A replica's state. */
  public enum State {
    /** In rotation. */
    SERVING,
    /** Taken out of rotation after a failed step. */
    FAILED
  }

  /** One replica: its index among the model's replicas, its device, its scheduler and state. */
  public static final class Replica {
    private final int index;
    private final ContinuousScheduler scheduler;
    private final DeviceTimeCounters counters;
    private volatile State state = State.SERVING;

    private Replica(int index, ContinuousScheduler scheduler, DeviceTimeCounters counters) {
      this.index = index;
      this.scheduler = scheduler;
      this.counters = counters;
    }

    public int index() {
      return index;
    }

    /** The device's label: {@code cpu}, {@code cpu:N} or {@code cuda:N}. */
    public String device() {
      return scheduler.device();
    }

    public ContinuousScheduler scheduler() {
      return scheduler;
    }

    public DeviceTimeCounters counters() {
      return counters;
    }

    public State state() {
      return state;
    }

    /** Why it was taken out of rotation, else null. */
    public Throwable failure() {
      return scheduler.failure();
    }
  }

  private final String modelName;
  private final List<Replica> replicas;
  private final AtomicInteger turn = new AtomicInteger();
  private final Object lock = new Object();

  private ReplicaRouter(String modelName, List<Replica> replicas) {
    this.modelName = modelName;
    this.replicas = List.copyOf(replicas);
  }

  /**
   * Starts one scheduler per replica and the router in front of them.
   *
   * @param specs the replicas, at least one, all of the same model
   * @param sink where every replica publishes its usage records
   * @throws IllegalArgumentException if there is no replica or they serve different models
   */
  public static ReplicaRouter start(
      List<ReplicaSpec> specs, UsageSink sink, Ticker ticker, Clock clock) {
    if (specs.isEmpty()) {
      throw new IllegalArgumentException("a model needs at least one replica");
    }
    String name = specs.get(0).model().config().name();
    for (ReplicaSpec s : specs) {
      if (!s.model().config().name().equals(name)) {
        throw new IllegalArgumentException(
            "replicas of " + name + " include model " + s.model().config().name());
      }
    }
    KeyShares shares = KeyShares.of(specs.get(0).config());
    ReplicaRouter[] self = new ReplicaRouter[1];
    List<Replica> replicas = new ArrayList<>();
    try {
      for (int i = 0; i < specs.size(); i++) {
        ReplicaSpec s = specs.get(i);
        int index = i;
        StepListener downstream = s.listener();
        StepListener listener =
            report -> {
              downstream.onStep(report);
              if (report.failed()) {
                self[0].stepFailed(index);
              }
            };
        String thread =
            specs.size() == 1
                ? "scheduler-" + name
                : "scheduler-" + name + "-" + s.timer().info().device();
        ContinuousScheduler scheduler =
            new ContinuousScheduler(
                s.model(),
                s.timer(),
                s.counters(),
                sink,
                s.config(),
                ticker,
                clock,
                listener,
                shares,
                thread);
        replicas.add(new Replica(index, scheduler, s.counters()));
      }
    } catch (RuntimeException | Error e) {
      for (Replica r : replicas) {
        r.scheduler.shutdown(0, TimeUnit.NANOSECONDS);
      }
      throw e;
    }
    // published before any request can reach a scheduler (steps need a submission first)
    self[0] = new ReplicaRouter(name, replicas);
    return self[0];
  }

  /** A replica's step failed; called on its scheduler thread. */
  private void stepFailed(int index) {
    Replica r = replicas.get(index);
    synchronized (lock) {
      if (r.state != State.SERVING) {
        return;
      }
      long serving = replicas.stream().filter(x -> x.state == State.SERVING).count();
      if (serving <= 1) {
        log.error(
            "replica {} of model {} on {} failed a step; it is the last one in rotation and keeps"
                + " serving",
            index,
            modelName,
            r.device());
        return;
      }
      r.state = State.FAILED;
    }
    log.error(
        "replica {} of model {} on {} failed a step and is taken out of rotation; its requests"
            + " end with an error, the other replicas keep serving",
        index,
        modelName,
        r.device());
    r.scheduler.fail(
        new ReplicaFailedException(
            "the device "
                + r.device()
                + " serving model "
                + modelName
                + " failed and was taken out of rotation; this request was charged only for the"
                + " steps it ran there",
            r.device()));
  }

  public String modelName() {
    return modelName;
  }

  /** Every replica, in device order. */
  public List<Replica> replicas() {
    return replicas;
  }

  /** The replicas' common settings (the first replica's). */
  public SchedulerConfig config() {
    return replicas.get(0).scheduler.config();
  }

  @Override
  public Generation submit(GenerationRequest request) {
    return submit(request, StepGuard.NONE);
  }

  /** As {@link #submit(GenerationRequest)}, with the budget's per-step guard for the request. */
  @Override
  public Generation submit(GenerationRequest request, StepGuard guard) {
    AdmissionRejectedException last = null;
    for (int attempt = 0; attempt < replicas.size(); attempt++) {
      Replica r = pick();
      if (r == null) {
        break;
      }
      try {
        return r.scheduler.submit(request, guard);
      } catch (AdmissionRejectedException e) {
        if (e.reason() != AdmissionRejectedException.Reason.SHUTTING_DOWN
            || r.state == State.SERVING) {
          throw e; // full, too long or the model shutting down: the same on every replica
        }
        last = e; // it failed since it was picked: try another
      }
    }
    throw last != null
        ? last
        : new AdmissionRejectedException(
            AdmissionRejectedException.Reason.SHUTTING_DOWN,
            "model " + modelName + " has no replica in rotation");
  }

  /** The replica in rotation with the fewest waiting tokens, then running sequences; or null. */
  private Replica pick() {
    int n = replicas.size();
    if (n == 1) {
      Replica only = replicas.get(0);
      return only.state == State.SERVING ? only : null;
    }
    int start = Math.floorMod(turn.getAndIncrement(), n);
    Replica best = null;
    long bestTokens = 0;
    int bestRunning = 0;
    for (int k = 0; k < n; k++) {
      Replica r = replicas.get((start + k) % n);
      if (r.state != State.SERVING) {
        continue;
      }
      long tokens = r.scheduler.waitingTokens();
      int running = r.scheduler.stats().running();
      if (best == null || tokens < bestTokens || (tokens == bestTokens && running < bestRunning)) {
        best = r;
        bestTokens = tokens;
        bestRunning = running;
      }
    }
    return best;
  }

  /** The replicas' figures added up (the last step's: the largest of them). */
  @Override
  public SchedulerStats stats() {
    int queued = 0;
    int running = 0;
    long steps = 0;
    long lastStepNs = 0;
    int lastBatch = 0;
    int lastTokens = 0;
    long completed = 0;
    long rejected = 0;
    for (Replica r : replicas) {
      SchedulerStats s = r.scheduler.stats();
      queued += s.queued();
      running += s.running();
      steps += s.steps();
      lastStepNs = Math.max(lastStepNs, s.lastStepNs());
      lastBatch = Math.max(lastBatch, s.lastBatchSize());
      lastTokens = Math.max(lastTokens, s.lastStepTokens());
      completed += s.completed();
      rejected += s.rejected();
    }
    return new SchedulerStats(
        queued, running, steps, lastStepNs, lastBatch, lastTokens, completed, rejected);
  }

  /**
   * Shuts every replica down within one grace (see {@link ContinuousScheduler#shutdown}): all stop
   * admitting first, then each is waited for.
   */
  public void shutdown(long grace, TimeUnit unit) {
    long deadline = System.nanoTime() + unit.toNanos(grace);
    for (Replica r : replicas) {
      r.scheduler.stopAdmitting();
    }
    for (Replica r : replicas) {
      r.scheduler.shutdown(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
    }
  }

  @Override
  public void close() {
    shutdown(30, TimeUnit.SECONDS);
  }
}
