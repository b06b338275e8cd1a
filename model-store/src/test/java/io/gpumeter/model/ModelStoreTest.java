package io.gpumeter.model;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.StepReport;
import io.gpumeter.metering.StepTimerFactory;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ModelStoreTest {
  @TempDir Path tmp;

  @Test
  void loadAndWarmUpAreRecordedAsSystemTimeAndNothingIsCharged() {
    ModelStore store = TestModels.store();
    assertThat(store.models())
        .extracting(ServedModel::name)
        .containsExactly("demo-byte-lm", "tiny-llama-bpe");
    ServedModel served = store.get("demo-byte-lm").orElseThrow();
    assertThat(store.get("nope")).isEmpty();
    assertThat(served.model().device()).isEqualTo("cpu");
    assertThat(served.timer().info().device()).isEqualTo("cpu");
    assertThat(served.loadNs()).isPositive();
    assertThat(served.warmupNs()).isPositive();
    DeviceTimeCounters.Snapshot s = served.counters().snapshot();
    // other tests may share the store, but none of them records steps into its counters
    assertThat(s.systemNs()).isEqualTo(served.loadNs() + served.warmupNs());
    assertThat(s.chargedNs()).isZero();
    assertThat(s.measuredNs()).isEqualTo(s.systemNs());
    assertThat(s.steps()).isZero();
    // one system report per timed pass: the load, then every warm-up pass; they are what the
    // counters hold, and what the server hands to reconciliation
    assertThat(served.systemReports()).hasSizeGreaterThan(2);
    assertThat(served.systemReports().get(0).measuredNs()).isEqualTo(served.loadNs());
    assertThat(served.systemReports())
        .allSatisfy(
            r -> {
              assertThat(r.kind()).isEqualTo(StepReport.Kind.SYSTEM);
              assertThat(r.model()).isEqualTo("demo-byte-lm");
              assertThat(r.device()).isEqualTo("cpu");
              assertThat(r.chargedNs()).isZero();
              assertThat(r.sequences()).isZero();
              assertThat(r.systemNs()).isEqualTo(r.measuredNs());
            });
    assertThat(served.systemReports().stream().mapToLong(StepReport::systemNs).sum())
        .isEqualTo(s.systemNs());
  }

  @Test
  void noModelIsAnError() {
    assertThatThrownBy(() -> ModelStore.open(tmp, "cpu", StepTimerFactory.hostOnly()))
        .isInstanceOf(ModelException.class)
        .hasMessageContaining("no model under");
    assertThatThrownBy(
            () -> ModelStore.open(tmp.resolve("missing"), "cpu", StepTimerFactory.hostOnly()))
        .hasMessageContaining("does not exist");
  }

  @Test
  void duplicateNamesAreAnError() throws IOException {
    Path demo = TestModels.demoDir();
    for (String d : new String[] {"a", "b"}) {
      Path dir = Files.createDirectory(tmp.resolve(d));
      Files.copy(demo.resolve("model.json"), dir.resolve("model.json"));
      Files.createSymbolicLink(dir.resolve("model.pt"), demo.resolve("model.pt").toAbsolutePath());
    }
    assertThatThrownBy(() -> ModelStore.open(tmp, "cpu", StepTimerFactory.hostOnly()))
        .isInstanceOf(ModelException.class)
        .hasMessageContaining("duplicate model name 'demo-byte-lm'");
  }

  @Test
  void invalidDeviceOptionIsAnError() {
    assertThatThrownBy(() -> DjlLanguageModel.resolveDevice("tpu"))
        .isInstanceOf(ModelException.class)
        .hasMessageContaining("auto, cpu, cuda, cuda:N");
    assertThat(DjlLanguageModel.deviceName(DjlLanguageModel.resolveDevice("cpu"))).isEqualTo("cpu");
  }

  @Test
  void aModelThatFailsToLoadIsReportedWithItsName() throws IOException {
    Path dir = Files.createDirectory(tmp.resolve("broken"));
    Files.writeString(
        dir.resolve("model.json"),
        Files.readString(TestModels.demoDir().resolve("model.json"))
            .replace("demo-byte-lm", "broken"));
    Files.write(dir.resolve("model.pt"), new byte[] {1, 2, 3});
    assertThatThrownBy(() -> ModelStore.open(tmp, "cpu", StepTimerFactory.hostOnly()))
        .isInstanceOf(ModelException.class)
        .hasMessageContaining("model broken: cannot load");
  }

  @Test
  void aFailureClosesTheModelsAlreadyLoaded() throws IOException {
    String json = Files.readString(TestModels.demoDir().resolve("model.json"));
    for (String name : new String[] {"a", "b"}) {
      Path dir = Files.createDirectory(tmp.resolve(name));
      Files.writeString(dir.resolve("model.json"), json.replace("demo-byte-lm", name));
      Files.write(dir.resolve("model.pt"), new byte[] {0});
    }
    java.util.List<FakeModel> loaded = new java.util.ArrayList<>();
    ModelStore.Loader loader =
        new ModelStore.Loader(
            "cpu",
            config -> {
              if (config.name().equals("b")) {
                throw new ModelException("b does not load");
              }
              FakeModel m = new FakeModel(config);
              loaded.add(m);
              return m;
            });
    assertThatThrownBy(() -> ModelStore.open(tmp, loader, StepTimerFactory.hostOnly()))
        .hasMessage("b does not load");
    assertThat(loaded).hasSize(1);
    assertThat(loaded.get(0).closed).isTrue();
    assertThat(loaded.get(0).steps).isPositive(); // it was warmed up before b failed
  }

  @Test
  void openEachLeavesFailedDirectoriesOutAndModelsLoadAndUnloadWhileOpen() throws IOException {
    String json = Files.readString(TestModels.demoDir().resolve("model.json"));
    for (String name : new String[] {"a", "b", "c"}) {
      Path dir = Files.createDirectory(tmp.resolve(name));
      Files.writeString(
          dir.resolve("model.json"),
          name.equals("c") ? "{not json" : json.replace("demo-byte-lm", name));
      Files.write(dir.resolve("model.pt"), new byte[] {0});
    }
    java.util.List<FakeModel> loaded = new java.util.ArrayList<>();
    ModelStore.Loader loader =
        new ModelStore.Loader(
            "cpu",
            config -> {
              if (config.name().equals("b")) {
                throw new ModelException("b does not load");
              }
              FakeModel m = new FakeModel(config);
              loaded.add(m);
              return m;
            });
    try (ModelStore store = ModelStore.openEach(tmp, loader, StepTimerFactory.hostOnly())) {
      assertThat(store.models()).extracting(ServedModel::name).containsExactly("a");
      assertThat(store.failures()).hasSize(2);
      assertThat(store.failures().get(tmp.resolve("b").toAbsolutePath()))
          .isEqualTo("b does not load");
      assertThat(store.failures().get(tmp.resolve("c").toAbsolutePath()))
          .contains("not valid JSON");

      assertThatThrownBy(() -> store.load(tmp.resolve("a")))
          .isInstanceOf(ModelException.class)
          .hasMessageContaining("'a' is already served");
      ServedModel a = store.remove("a").orElseThrow();
      assertThat(store.models()).isEmpty();
      assertThat(loaded.get(0).closed).isFalse(); // the caller closes it once it is idle
      ModelStore.close(a);
      assertThat(loaded.get(0).closed).isTrue();
      assertThat(store.remove("a")).isEmpty();

      // loaded again while the store is open: load and warm-up are system time, nothing charged
      ServedModel again = store.load(tmp.resolve("a"));
      assertThat(store.models()).containsExactly(again);
      assertThat(loaded).hasSize(2);
      assertThat(loaded.get(1).steps).isPositive();
      assertThat(again.systemReports()).hasSizeGreaterThan(2);
      assertThat(again.counters().snapshot().chargedNs()).isZero();
      assertThat(again.counters().snapshot().systemNs())
          .isEqualTo(again.loadNs() + again.warmupNs());
    }
    assertThat(loaded.get(1).closed).isTrue();
  }

  /** Counts warm-up calls; returns zero logits. */
  private static final class FakeModel implements LanguageModel {
    final ModelConfig config;
    int steps;
    boolean closed;

    FakeModel(ModelConfig config) {
      this.config = config;
    }

    @Override
    public ModelConfig config() {
      return config;
    }

    @Override
    public Tokenizer tokenizer() {
      return new ByteTokenizer(config.vocabSize());
    }

    @Override
    public String device() {
      return "cpu";
    }

    @Override
    public KvCache newCache(int slots) {
      return new KvCache() {
        @Override
        public int slots() {
          return slots;
        }

        @Override
        public long bytes() {
          return 0;
        }

        @Override
        public void close() {}
      };
    }

    @Override
    public void step(StepBatch batch, KvCache cache, float[][] logits) {
      steps++;
    }

    @Override
    public void copyPrefix(KvCache cache, int fromSlot, int toSlot, int positions) {
      // holds no keys or values: nothing to copy
    }

    @Override
    public float[] forwardLast(int[] tokens) {
      return new float[config.vocabSize()];
    }

    @Override
    public void close() {
      closed = true;
    }
  }
}
