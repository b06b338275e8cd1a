package io.gpumeter.model;

import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.RelabeledStepTimer;
import io.gpumeter.metering.StepReport;
import io.gpumeter.metering.StepTimer;
import io.gpumeter.metering.StepTimerFactory;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.function.Function;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The models a server serves, loaded and warmed before it reports ready.
 *
 * <p>Cold starts are never billed (invariant 6): loading each model and every warm-up pass is timed
 * with the model's own {@link StepTimer} and becomes one system {@link StepReport} per timed pass.
 * Each report is recorded once into the model's {@link DeviceTimeCounters} and kept in {@link
 * ServedModel#systemReports()}, which the server hands once to its reconciliation feed; nothing is
 * charged to any request.
 */
public final class ModelStore implements AutoCloseable {
  private static final Logger log = LoggerFactory.getLogger(ModelStore.class);

  /** KV cache slots used by warm-up (and the largest warm-up decode batch). */
  static final int WARMUP_SLOTS = 8;

  private static final int[] WARMUP_DECODE_BATCHES = {1, 4, WARMUP_SLOTS};
  private static final int WARMUP_PREFILL = 32;

  /** Guarded by {@code this}; load order. The first replica of each model. */
  private final Map<String, ServedModel> models;

  /** Every replica of each model, the first one first; guarded by {@code this}. */
  private final Map<String, List<ServedModel>> replicas = new LinkedHashMap<>();

  /** Directories that failed to load, with the reason; guarded by {@code this}. */
  private final Map<Path, String> failures = new LinkedHashMap<>();

  /** The loaders of a model's replicas, by model name: one per device it runs on. */
  private final Function<String, List<Loader>> loaders;

  private final StepTimerFactory timers;

  private ModelStore(
      Map<String, List<ServedModel>> served,
      Function<String, List<Loader>> loaders,
      StepTimerFactory timers) {
    this.models = new LinkedHashMap<>();
    served.forEach(
        (name, list) -> {
          models.put(name, list.get(0));
          replicas.put(name, List.copyOf(list));
        });
    this.loaders = loaders;
    this.timers = timers;
  }

  /**
   * Loads and warms every model directory under {@code modelsDir} (each direct subdirectory that
   * holds a {@code model.json}), in name order of the directories.
   *
   * @param deviceOption {@code auto}, {@code cpu} or {@code cuda:N}; see {@link
   *     DjlLanguageModel#resolveDevice}
   * @param timers gives the step timer of each model's device
   * @throws ModelException if there is no model, two models share a name, a config is invalid, or a
   *     model fails to load or to warm up; models already loaded are closed again
   */
  public static ModelStore open(Path modelsDir, String deviceOption, StepTimerFactory timers) {
    // resolve the device before the first load so that its timer exists before the load it times
    ai.djl.Device device = DjlLanguageModel.resolveDevice(deviceOption);
    String name = DjlLanguageModel.deviceName(device);
    return open(
        modelsDir, new Loader(name, config -> DjlLanguageModel.load(config, device)), timers);
  }

  /**
   * Loads one model onto a device known before loading.
   *
   * @param device {@code cpu} or {@code cuda:N}, where {@code load} puts the models
   * @param label the device label the replica's timer reports: {@code device}, or {@code cpu:N} for
   *     CPU replica N of a model with several CPU replicas
   * @param load loads one model
   */
  record Loader(String device, String label, Function<ModelConfig, LanguageModel> load) {
    Loader(String device, Function<ModelConfig, LanguageModel> load) {
      this(device, device, load);
    }
  }

  /**
   * Loads and warms every model directory under {@code modelsDir} as {@link #openEach(Path, String,
   * StepTimerFactory)} does, but each model once per device that {@code devicesOf} lists for it:
   * one replica per device, each with its own timer, counters and system time (its load and
   * warm-up, on its own device). A model whose list has one entry is served as before.
   *
   * @param devicesOf the device options of a model by name: {@code auto}, {@code cpu}, {@code
   *     cuda:N} or {@code all} (every GPU the engine sees, else the CPU); see {@link
   *     #replicaDevices}
   */
  public static ModelStore openEach(
      Path modelsDir, Function<String, List<String>> devicesOf, StepTimerFactory timers) {
    Objects.requireNonNull(devicesOf, "devicesOf");
    return openReplicas(modelsDir, name -> djlLoaders(devicesOf.apply(name)), timers);
  }

  /**
   * The devices of a model's replicas for a list of device options: {@code all} becomes every GPU
   * DJL's PyTorch engine sees (the CPU when it sees none), {@code auto} the first GPU or the CPU.
   * Several CPU entries are labelled {@code cpu:0}, {@code cpu:1}, ... so that each replica's time
   * is kept apart.
   *
   * @return the device ({@code cpu} or {@code cuda:N}) and label of each replica, in order
   * @throws ModelException if an option is invalid, names a GPU the engine does not see, or names
   *     the same GPU twice
   */
  public static List<String[]> replicaDevices(List<String> options) {
    List<ai.djl.Device> devices = new ArrayList<>();
    for (String option : options) {
      if (option.trim().equalsIgnoreCase("all")) {
        devices.addAll(DjlLanguageModel.allDevices());
      } else {
        devices.add(DjlLanguageModel.resolveDevice(option));
      }
    }
    if (devices.isEmpty()) {
      throw new ModelException("no device to serve on");
    }
    long cpus = devices.stream().filter(d -> !d.isGpu()).count();
    List<String[]> out = new ArrayList<>();
    java.util.Set<String> gpus = new java.util.HashSet<>();
    int cpuIndex = 0;
    for (ai.djl.Device d : devices) {
      String name = DjlLanguageModel.deviceName(d);
      if (d.isGpu() && !gpus.add(name)) {
        throw new ModelException("device " + name + " is listed twice; one replica per GPU");
      }
      String label = !d.isGpu() && cpus > 1 ? "cpu:" + cpuIndex++ : name;
      out.add(new String[] {name, label});
    }
    return out;
  }

  private static List<Loader> djlLoaders(List<String> options) {
    List<String[]> devices = replicaDevices(options);
    boolean severalCpu = devices.stream().filter(d -> d[0].equals("cpu")).count() > 1;
    List<Loader> out = new ArrayList<>();
    for (String[] d : devices) {
      ai.djl.Device device = DjlLanguageModel.resolveDevice(d[0]);
      out.add(
          new Loader(
              d[0],
              d[1],
              config -> {
                DjlLanguageModel m = DjlLanguageModel.load(config, device);
                if (severalCpu && !device.isGpu()) {
                  m.useIntraOpThreads(1); // CPU replicas share the cores: one thread each
                }
                return m;
              }));
    }
    return out;
  }

  /**
   * As {@link #open(Path, String, StepTimerFactory)} with another loader (tests, other engines).
   */
  static ModelStore open(Path modelsDir, Loader loader, StepTimerFactory timers) {
    Objects.requireNonNull(loader, "loader");
    Objects.requireNonNull(timers, "timers");
    List<ModelConfig> configs = readConfigs(modelsDir);
    Map<String, List<ServedModel>> served = new LinkedHashMap<>();
    try {
      for (ModelConfig config : configs) {
        served.put(config.name(), List.of(loadAndWarm(config, loader, timers)));
      }
    } catch (RuntimeException e) {
      for (List<ServedModel> list : served.values()) {
        list.forEach(ModelStore::closeQuietly);
      }
      throw e;
    }
    return new ModelStore(served, name -> List.of(loader), timers);
  }

  /**
   * Like {@link #open(Path, String, StepTimerFactory)}, but a model directory that fails (invalid
   * {@code model.json}, duplicate name, load or warm-up failure) does not stop the others: it is
   * left out, closed, logged and listed in {@link #failures()} with the reason. The store may end
   * up with no model; the caller decides whether that is fatal.
   *
   * @throws ModelException if {@code modelsDir} does not exist or cannot be listed, or holds no
   *     model directory at all
   */
  public static ModelStore openEach(Path modelsDir, String deviceOption, StepTimerFactory timers) {
    ai.djl.Device device = DjlLanguageModel.resolveDevice(deviceOption);
    String name = DjlLanguageModel.deviceName(device);
    return openEach(
        modelsDir, new Loader(name, config -> DjlLanguageModel.load(config, device)), timers);
  }

  /** As {@link #openEach(Path, String, StepTimerFactory)} with another loader. */
  static ModelStore openEach(Path modelsDir, Loader loader, StepTimerFactory timers) {
    Objects.requireNonNull(loader, "loader");
    return openReplicas(modelsDir, name -> List.of(loader), timers);
  }

  /** As {@link #openEach(Path, Loader, StepTimerFactory)} with the loaders of each replica. */
  static ModelStore openReplicas(
      Path modelsDir, Function<String, List<Loader>> loaders, StepTimerFactory timers) {
    Objects.requireNonNull(loaders, "loaders");
    Objects.requireNonNull(timers, "timers");
    ModelStore store = new ModelStore(Map.of(), loaders, timers);
    for (Path dir : modelDirs(modelsDir)) {
      try {
        store.load(dir);
      } catch (RuntimeException e) {
        log.error("model directory {} failed to load and is not served: {}", dir, e.getMessage());
      }
    }
    return store;
  }

  /**
   * Loads and warms one more model directory while the store is in use. Load and warm-up are system
   * time, as at {@link #open}.
   *
   * @return the served model
   * @throws ModelException if the directory is not a valid model, its name is already served, or
   *     loading or warm-up fails; the failure is also listed in {@link #failures()} until the
   *     directory loads
   */
  public ServedModel load(Path dir) {
    Path key = dir.toAbsolutePath().normalize();
    try {
      ModelConfig config = ModelConfigs.read(dir);
      synchronized (this) {
        if (models.containsKey(config.name())) {
          throw new ModelException(
              "model '"
                  + config.name()
                  + "' is already served (from "
                  + models.get(config.name()).model().config().directory()
                  + "); unload it first");
        }
      }
      List<ServedModel> all = new ArrayList<>();
      try {
        for (Loader loader : loaders.apply(config.name())) {
          all.add(loadAndWarm(config, loader, timers));
        }
      } catch (RuntimeException e) {
        all.forEach(ModelStore::closeQuietly);
        throw e;
      }
      ServedModel served = all.get(0);
      synchronized (this) {
        if (models.putIfAbsent(config.name(), served) != null) {
          all.forEach(ModelStore::closeQuietly);
          throw new ModelException(
              "model '" + config.name() + "' was loaded concurrently by another request");
        }
        replicas.put(config.name(), List.copyOf(all));
        failures.remove(key);
      }
      return served;
    } catch (RuntimeException e) {
      synchronized (this) {
        failures.put(key, String.valueOf(e.getMessage()));
      }
      throw e;
    }
  }

  /**
   * Stops serving a model: removes it from the store and returns it, still open. The caller stops
   * using it (the server waits for its running sequences) and then closes it with {@link
   * #close(ServedModel)}.
   */
  public synchronized Optional<ServedModel> remove(String name) {
    replicas.remove(name);
    return Optional.ofNullable(models.remove(name));
  }

  /**
   * As {@link #remove} for every replica of the model: removes them and returns them, still open
   * (empty if the model is not served).
   */
  public synchronized List<ServedModel> removeReplicas(String name) {
    models.remove(name);
    List<ServedModel> all = replicas.remove(name);
    return all == null ? List.of() : all;
  }

  /** Every replica of a model, the first one ({@link #get}) first; empty if not served. */
  public synchronized List<ServedModel> replicas(String name) {
    return replicas.getOrDefault(name, List.of());
  }

  /** Model directories that failed to load, with the reason, in the order they failed. */
  public synchronized Map<Path, String> failures() {
    return Map.copyOf(new LinkedHashMap<>(failures));
  }

  /** Closes a model removed with {@link #remove}: its weights, caches, tokenizer and timer. */
  public static void close(ServedModel model) {
    closeQuietly(model);
  }

  /** Reads every {@code model.json} one level below {@code modelsDir}; checks names are unique. */
  static List<ModelConfig> readConfigs(Path modelsDir) {
    Map<String, ModelConfig> byName = new LinkedHashMap<>();
    for (Path dir : modelDirs(modelsDir)) {
      ModelConfig c = ModelConfigs.read(dir);
      ModelConfig previous = byName.putIfAbsent(c.name(), c);
      if (previous != null) {
        throw new ModelException(
            "duplicate model name '"
                + c.name()
                + "' in "
                + previous.directory()
                + " and "
                + c.directory());
      }
    }
    return new ArrayList<>(byName.values());
  }

  /** The direct subdirectories of {@code modelsDir} holding a {@code model.json}, sorted. */
  static List<Path> modelDirs(Path modelsDir) {
    if (!Files.isDirectory(modelsDir)) {
      throw new ModelException("models directory " + modelsDir + " does not exist");
    }
    List<Path> dirs;
    try (Stream<Path> s = Files.list(modelsDir)) {
      dirs =
          s.filter(Files::isDirectory)
              .filter(d -> Files.isRegularFile(d.resolve(ModelConfigs.FILE_NAME)))
              .sorted()
              .toList();
    } catch (IOException e) {
      throw new ModelException("cannot list models directory " + modelsDir + ": " + e, e);
    }
    if (dirs.isEmpty()) {
      throw new ModelException(
          "no model under "
              + modelsDir
              + ": expected subdirectories with a "
              + ModelConfigs.FILE_NAME);
    }
    return dirs;
  }

  private static ServedModel loadAndWarm(
      ModelConfig config, Loader loader, StepTimerFactory timers) {
    DeviceTimeCounters counters = new DeviceTimeCounters();
    StepTimer timer = timers.forDevice(loader.device());
    if (!loader.label().equals(loader.device())) {
      timer = new RelabeledStepTimer(timer, loader.label());
    }
    SystemSteps system = new SystemSteps(config.name(), timer.info().device(), counters);
    LanguageModel model = null;
    long loadNs;
    StepTimer.Span span = timer.begin();
    try {
      model = loader.load().apply(config);
    } finally {
      loadNs = span.end();
      system.add(loadNs);
      if (model == null) {
        timer.close();
      }
    }
    try {
      if (!model.device().equals(loader.device())) {
        throw new ModelException(
            "model "
                + config.name()
                + " was loaded on "
                + model.device()
                + ", expected "
                + loader.device());
      }
      long warmupNs = warmUp(model, timer, system);
      log.info(
          "model {} ready on {} ({} timer): load {} ms, warm-up {} ms, recorded as system time",
          config.name(),
          model.device(),
          timer.info().timerKind(),
          loadNs / 1_000_000,
          warmupNs / 1_000_000);
      return new ServedModel(model, timer, counters, loadNs, warmupNs, system.reports());
    } catch (RuntimeException e) {
      model.close();
      timer.close();
      throw e;
    }
  }

  /**
   * Warm-up passes: packed prefill of every slot, decode steps at several batch sizes (twice each:
   * the first calls of a TorchScript method are slower), a mixed step (one prefill chunk with
   * decodes) and a forward pass. Each pass is timed and added to {@code system} as one system step.
   *
   * @return the total measured warm-up time
   */
  static long warmUp(LanguageModel model, StepTimer timer, SystemSteps system) {
    ModelConfig c = model.config();
    int slots = WARMUP_SLOTS;
    int prefill = Math.min(WARMUP_PREFILL, c.contextLength() / 2);
    int[] text = model.tokenizer().encode("Warm-up text for the model store. ");
    int[] ids = new int[Math.max(prefill, 1)];
    for (int i = 0; i < ids.length; i++) {
      ids[i] = text.length == 0 ? 0 : text[i % text.length] % c.vocabSize();
    }
    float[][] logits = new float[slots][c.vocabSize()];
    StepBatch batch = new StepBatch(slots * prefill, slots);
    long total = 0;
    try (KvCache cache = model.newCache(slots)) {
      // prefill every slot in one packed step
      batch.clear();
      for (int s = 0; s < slots; s++) {
        batch.addSequence(s, ids, 0, prefill, 0);
      }
      total += timed(timer, system, () -> model.step(batch, cache, logits));
      int position = prefill;
      for (int b : WARMUP_DECODE_BATCHES) {
        for (int rep = 0; rep < 2 && position < c.contextLength(); rep++) {
          int pos = position++;
          batch.clear();
          for (int s = 0; s < Math.min(b, slots); s++) {
            batch.addSequence(s, ids, s % ids.length, 1, pos);
          }
          total += timed(timer, system, () -> model.step(batch, cache, logits));
        }
      }
      // mixed: slot 0 starts over with a prefill chunk while the others decode
      if (position < c.contextLength()) {
        int pos = position;
        batch.clear();
        batch.addSequence(0, ids, 0, prefill, 0);
        for (int s = 1; s < slots; s++) {
          batch.addSequence(s, ids, s % ids.length, 1, pos);
        }
        total += timed(timer, system, () -> model.step(batch, cache, logits));
      }
    }
    total += timed(timer, system, () -> model.forwardLast(ids));
    return total;
  }

  private static long timed(StepTimer timer, SystemSteps system, Runnable pass) {
    StepTimer.Span span = timer.begin();
    long ns;
    try {
      pass.run();
    } finally {
      ns = span.end();
      system.add(ns);
    }
    return ns;
  }

  /**
   * The system steps of one model as they are measured: each becomes a {@link StepReport}, recorded
   * once into the model's counters and kept for the server's reconciliation feed.
   */
  static final class SystemSteps {
    private final String model;
    private final String device;
    private final DeviceTimeCounters counters;
    private final List<StepReport> reports = new ArrayList<>();

    SystemSteps(String model, String device, DeviceTimeCounters counters) {
      this.model = model;
      this.device = device;
      this.counters = counters;
    }

    void add(long measuredNs) {
      StepReport report = StepReport.system(model, device, measuredNs);
      counters.record(report);
      reports.add(report);
    }

    List<StepReport> reports() {
      return List.copyOf(reports);
    }
  }

  /** All served models, in load order. */
  public synchronized List<ServedModel> models() {
    return List.copyOf(models.values());
  }

  /** The served model of that name. */
  public synchronized Optional<ServedModel> get(String name) {
    return Optional.ofNullable(models.get(name));
  }

  @Override
  public void close() {
    List<ServedModel> all = new ArrayList<>();
    synchronized (this) {
      replicas.values().forEach(all::addAll);
      models.clear();
      replicas.clear();
    }
    for (ServedModel m : all) {
      closeQuietly(m);
    }
  }

  private static void closeQuietly(ServedModel m) {
    try {
      m.model().close();
    } catch (RuntimeException e) {
      log.warn("closing model {} failed", m.name(), e);
    }
    try {
      m.timer().close();
    } catch (RuntimeException e) {
      log.warn("closing the timer of model {} failed", m.name(), e);
    }
  }
}
