package io.gpumeter.batching;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.gpumeter.metering.StepReport;
import io.gpumeter.metering.StepTimerFactory;
import io.gpumeter.metering.Ticker;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import io.gpumeter.model.ModelException;
import io.gpumeter.model.ModelStore;
import io.gpumeter.model.ServedModel;
import io.gpumeter.model.Tokenizer;
import java.time.Clock;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Two replicas of the real demo model on the CPU ({@code devices = cpu,cpu}: labels {@code cpu:0}
 * and {@code cpu:1}, one intra-op thread each) behind a {@link ReplicaRouter}: work spreads over
 * both, each device's time is conserved on its own, one replica killed mid-run (its next step
 * throws) is taken out of rotation with its requests charged for the steps they ran, and the
 * per-key share of the queue holds for the model as a whole.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class ReplicaRouterTest {
  private static ModelStore store;
  private static List<ServedModel> replicas;

  private final RecordingSink sink = new RecordingSink();
  private final Map<String, StepLog> logs = new java.util.concurrent.ConcurrentHashMap<>();
  private final AtomicLong ids = new AtomicLong();
  private ReplicaRouter router;

  @BeforeAll
  static void load() {
    store =
        ModelStore.openEach(
            TestModels.modelsDir(), name -> List.of("cpu", "cpu"), StepTimerFactory.hostOnly());
    replicas = store.replicas(store.models().get(0).name());
  }

  @AfterAll
  static void unload() {
    store.close();
  }

  @AfterEach
  void stop() {
    if (router != null) {
      router.close();
    }
  }

  private ReplicaRouter start(SchedulerConfig config) {
    List<ReplicaRouter.ReplicaSpec> specs = new ArrayList<>();
    for (ServedModel m : replicas) {
      StepLog log = new StepLog();
      logs.put(m.timer().info().device(), log);
      // a fresh counter per test: the store's counters hold the load and warm-up already
      specs.add(
          new ReplicaRouter.ReplicaSpec(
              m.model(), m.timer(), new io.gpumeter.metering.DeviceTimeCounters(), config, log));
    }
    router = ReplicaRouter.start(specs, sink, Ticker.system(), Clock.systemUTC());
    return router;
  }

  private GenerationRequest request(long key, int maxTokens) {
    Tokenizer tok = replicas.get(0).model().tokenizer();
    return new GenerationRequest(
        "req-" + ids.incrementAndGet(),
        key,
        key,
        tok.encode("The replicas share the work " + ids.get()),
        maxTokens,
        0,
        42,
        0,
        TokenListener.NONE);
  }

  /** Per device: the records' time = the step reports' measured time = the counters' charged. */
  private void assertConservedPerDevice(ReplicaRouter r) {
    Map<String, Long> charged =
        sink.records.stream()
            .collect(
                Collectors.groupingBy(
                    u -> u.timer().device(), Collectors.summingLong(UsageRecord::deviceNs)));
    long total = 0;
    for (ReplicaRouter.Replica replica : r.replicas()) {
      StepLog log = logs.get(replica.device());
      for (StepReport step : log.steps) {
        assertThat(step.device()).isEqualTo(replica.device());
        assertThat(StepLog.sharesSum(step)).isEqualTo(step.measuredNs());
      }
      assertThat(charged.getOrDefault(replica.device(), 0L))
          .as("records of %s add up to its measured steps", replica.device())
          .isEqualTo(log.measured())
          .isEqualTo(replica.counters().snapshot().chargedNs());
      total += log.measured();
    }
    assertThat(sink.deviceNs()).as("and in total").isEqualTo(total);
  }

  @Test
  void eachReplicaIsLoadedAndWarmedOnItsOwnDeviceAsSystemTime() {
    assertThat(replicas).hasSize(2);
    assertThat(replicas.get(0).timer().info().device()).isEqualTo("cpu:0");
    assertThat(replicas.get(1).timer().info().device()).isEqualTo("cpu:1");
    assertThat(replicas.get(1).timer().info().deviceIndex()).isEqualTo(1);
    assertThat(replicas.get(0).model()).isNotSameAs(replicas.get(1).model());
    for (ServedModel m : replicas) {
      assertThat(m.systemReports()).isNotEmpty();
      assertThat(m.systemReports())
          .allSatisfy(s -> assertThat(s.device()).isEqualTo(m.timer().info().device()));
      assertThat(m.counters().snapshot().systemNs()).isEqualTo(m.loadNs() + m.warmupNs());
      assertThat(m.counters().snapshot().chargedNs()).isZero();
    }
  }

  @Test
  void loadSpreadsOverBothReplicasAndEachDevicesTimeIsConserved() {
    ReplicaRouter r = start(SchedulerConfig.defaults());
    List<Generation> gens = new ArrayList<>();
    for (int i = 0; i < 24; i++) {
      gens.add(r.submit(request(i % 3, 12)));
    }
    for (Generation g : gens) {
      assertThat(g.result().join().usage().status()).isEqualTo(UsageStatus.OK);
    }
    Map<String, Long> perDevice =
        sink.records.stream()
            .collect(Collectors.groupingBy(u -> u.timer().device(), Collectors.counting()));
    assertThat(perDevice).containsOnlyKeys("cpu:0", "cpu:1");
    // the router balances by waiting tokens: neither replica takes (nearly) everything
    assertThat(perDevice.values()).allSatisfy(n -> assertThat(n).isGreaterThanOrEqualTo(6));
    assertConservedPerDevice(r);
  }

  @Test
  void aReplicaKilledMidRunIsTakenOutItsRequestsChargedForTheirStepsAndTheOtherServes() {
    ReplicaRouter r = start(SchedulerConfig.defaults());
    List<Generation> gens = new ArrayList<>();
    for (int i = 0; i < 16; i++) {
      gens.add(r.submit(request(i, 48)));
    }
    ReplicaRouter.Replica victim = r.replicas().get(1);
    await()
        .atMost(Duration.ofMinutes(2))
        .until(
            () -> logs.get("cpu:1").steps.size() >= 3 && victim.scheduler().stats().running() > 0);
    victim.scheduler().failNextStep(new ModelException("injected: device lost"));
    List<GenerationResult> results = gens.stream().map(g -> g.result().join()).toList();

    assertThat(victim.state()).isEqualTo(ReplicaRouter.State.FAILED);
    assertThat(r.replicas().get(0).state()).isEqualTo(ReplicaRouter.State.SERVING);
    List<GenerationResult> onVictim =
        results.stream().filter(g -> g.usage().timer().device().equals("cpu:1")).toList();
    assertThat(onVictim).isNotEmpty();
    for (GenerationResult g : onVictim) {
      assertThat(g.usage().status()).isEqualTo(UsageStatus.FAILED);
      assertThat(g.error()).isInstanceOf(ReplicaFailedException.class);
      assertThat(g.error()).hasMessageContaining("cpu:1");
    }
    assertThat(results)
        .filteredOn(g -> g.usage().timer().device().equals("cpu:0"))
        .isNotEmpty()
        .allSatisfy(g -> assertThat(g.usage().status()).isEqualTo(UsageStatus.OK));
    // the failed step itself was measured and split; nothing ran on cpu:1 after it
    List<StepReport> victimSteps = logs.get("cpu:1").steps;
    assertThat(victimSteps.get(victimSteps.size() - 1).failed()).isTrue();
    assertConservedPerDevice(r);

    // new work goes to the replica left, and the model keeps serving
    List<Generation> after = new ArrayList<>();
    for (int i = 0; i < 4; i++) {
      after.add(r.submit(request(100 + i, 4)));
    }
    for (Generation g : after) {
      UsageRecord u = g.result().join().usage();
      assertThat(u.status()).isEqualTo(UsageStatus.OK);
      assertThat(u.timer().device()).isEqualTo("cpu:0");
    }
    assertConservedPerDevice(r);
  }

  @Test
  void theLastReplicaInRotationIsNotTakenOut() {
    ReplicaRouter r = start(SchedulerConfig.defaults());
    r.replicas().get(0).scheduler().failNextStep(new ModelException("injected 0"));
    Generation first = r.replicas().get(0).scheduler().submit(request(1, 4));
    assertThat(first.result().join().usage().status()).isEqualTo(UsageStatus.FAILED);
    r.replicas().get(1).scheduler().failNextStep(new ModelException("injected 1"));
    Generation second = r.replicas().get(1).scheduler().submit(request(1, 4));
    GenerationResult failed = second.result().join();
    assertThat(failed.usage().status()).isEqualTo(UsageStatus.FAILED);
    assertThat(failed.error()).isInstanceOf(ModelException.class);
    assertThat(r.replicas().get(0).state()).isEqualTo(ReplicaRouter.State.FAILED);
    assertThat(r.replicas().get(1).state()).isEqualTo(ReplicaRouter.State.SERVING);
    assertThat(r.submit(request(2, 4)).result().join().usage().status()).isEqualTo(UsageStatus.OK);
    assertConservedPerDevice(r);
  }

  @Test
  void aKeysShareOfTheQueueHoldsForTheModelNotPerReplica() {
    // one running sequence per replica; each key may have 2 waiting for the whole model
    ReplicaRouter r = start(SchedulerConfig.defaults().withMaxRunning(1).withMaxQueuedPerKey(2));
    List<Generation> accepted = new ArrayList<>();
    int refused = 0;
    for (int i = 0; i < 8; i++) {
      try {
        accepted.add(r.submit(request(7, 64)));
      } catch (AdmissionRejectedException e) {
        assertThat(e.reason()).isEqualTo(AdmissionRejectedException.Reason.QUEUE_FULL);
        refused++;
      }
    }
    // at most 2 running (one per replica) + 2 waiting; per replica shares would have taken 6
    assertThat(accepted.size()).isLessThanOrEqualTo(4);
    assertThat(refused).isGreaterThanOrEqualTo(4);
    // another key is not refused for the first one's flood
    Generation other = r.submit(request(8, 2));
    assertThat(other.result().join().usage().status()).isEqualTo(UsageStatus.OK);
    accepted.forEach(g -> g.result().join());
    assertConservedPerDevice(r);
  }

  @Test
  void aRouterNeedsAReplica() {
    assertThatThrownBy(
            () -> ReplicaRouter.start(List.of(), sink, Ticker.system(), Clock.systemUTC()))
        .isInstanceOf(IllegalArgumentException.class);
  }
}
