package io.gpumeter.model;

import ai.djl.Device;
import ai.djl.MalformedModelException;
import ai.djl.engine.Engine;
import ai.djl.engine.EngineException;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Block;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.engine.PtNDManager;
import ai.djl.pytorch.engine.PtSymbolBlock;
import ai.djl.pytorch.jni.IValue;
import ai.djl.pytorch.jni.IValueUtils;
import ai.djl.pytorch.jni.JniUtils;
import ai.djl.repository.zoo.Criteria;
import ai.djl.repository.zoo.ModelNotFoundException;
import ai.djl.repository.zoo.ZooModel;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Objects;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A TorchScript model (see model-store/README.md for the contract) run by DJL's PyTorch engine.
 *
 * <p>{@link #step} calls the exported {@code step} method directly on the model's {@link
 * PtSymbolBlock} through {@link IValueUtils#runMethod}, not through a {@code Predictor}: on small
 * models the predictor's per-call work is a large share of a step. Each step's input tensors live
 * in an {@link ai.djl.ndarray.NDManager} of their own that is closed once the logits are on the
 * host, so native memory does not grow with the number of steps. The four index inputs are copied
 * from the {@link StepBatch} arrays into direct buffers that this model reuses from step to step.
 *
 * <p>Not thread-safe: one scheduler thread drives a model (see {@link LanguageModel}).
 */
public final class DjlLanguageModel implements LanguageModel {
  private static final Logger log = LoggerFactory.getLogger(DjlLanguageModel.class);

  /** DJL engine name. */
  public static final String ENGINE = "PyTorch";

  /**
   * Why a {@code bfloat16} model is refused: DJL 0.36's PyTorch JNI aborts the whole process
   * ({@code terminate called without an active exception}) when it creates a bfloat16 tensor, as
   * the KV cache must be ({@code NDManager.zeros(shape, BFLOAT16)}, or a float32 tensor's {@code
   * toType(BFLOAT16)}; seen on the CPU with libtorch 2.7.1, {@code DtypeTest}). float16 works.
   */
  static final String BFLOAT16_REFUSAL =
      "dtype bfloat16 is refused: DJL 0.36's PyTorch JNI aborts the process when it creates a"
          + " bfloat16 tensor (the KV cache); export the model in float16 (for CUDA) or float32";

  /** Name of the exported packed-step method in the TorchScript file. */
  public static final String STEP_METHOD = "step";

  private final ModelConfig config;
  private final Tokenizer tokenizer;
  private final ZooModel<NDList, NDList> model;
  private final PtSymbolBlock block;
  private final PtNDManager manager;
  private final String device;
  private final DataType cacheType;
  private final long bytesPerSlot;
  private final Parameters parameters;
  private final InputBuffer tokensIn = new InputBuffer();
  private final InputBuffer slotsIn = new InputBuffer();
  private final InputBuffer positionsIn = new InputBuffer();
  private final InputBuffer lastIndexIn = new InputBuffer();
  private boolean closed;
  private Thread configuredThread;

  /** Intra-op threads of the CPU engine for the threads that run this model; 0: the default. */
  private volatile int intraOpThreads;

  /**
   * Whether TorchScript's graph executor may profile and optimise the model's methods. Off unless
   * the system property {@code ai.djl.pytorch.graph_optimizer} is {@code true}: the packed step
   * sees a different input shape nearly every call, and with the optimiser on, steps at new shapes
   * took hundreds of milliseconds now and then (measured on the demo model, CPU) and the median was
   * no better. The setting is thread-local in libtorch, so it is applied on each thread that runs
   * the model.
   */
  static final boolean GRAPH_OPTIMIZER =
      Boolean.parseBoolean(System.getProperty("ai.djl.pytorch.graph_optimizer", "false"));

  private DjlLanguageModel(ModelConfig config, ZooModel<NDList, NDList> model, String device) {
    this.config = config;
    try {
      this.tokenizer = ModelConfigs.tokenizer(config);
    } catch (RuntimeException e) {
      model.close();
      throw e;
    }
    this.model = model;
    Block b = model.getBlock();
    if (!(b instanceof PtSymbolBlock)) {
      model.close();
      closeTokenizer();
      throw new ModelException(
          "model " + config.name() + ": expected a TorchScript module, DJL gave " + b);
    }
    this.block = (PtSymbolBlock) b;
    this.manager = (PtNDManager) model.getNDManager();
    this.device = device;
    this.cacheType = cacheType(config);
    this.bytesPerSlot = KvFootprint.bytesPerToken(config) * config.contextLength();
    this.parameters = countParameters(block);
  }

  /**
   * Parameter tensors of the TorchScript module as loaded, tied matrices (equal contents, such as
   * an output layer sharing the embedding) counted once; zero-size tensors and biases the exporter
   * materialises as zeros count as what they take in memory.
   *
   * @param count parameter values
   * @param bytes bytes those values take in memory on the model's device
   */
  public record Parameters(long count, long bytes) {}

  private static Parameters countParameters(PtSymbolBlock block) {
    long count = 0;
    long bytes = 0;
    java.util.List<ai.djl.ndarray.NDArray> matrices = new java.util.ArrayList<>();
    for (ai.djl.util.Pair<String, ai.djl.nn.Parameter> p : block.getParameters()) {
      ai.djl.ndarray.NDArray a = p.getValue().getArray();
      // tied weights (an output layer sharing the embedding) come back as two tensors with equal
      // contents; two independently trained matrices are never exactly equal
      if (a.getShape().dimension() >= 2 && matrices.stream().anyMatch(m -> sameTensor(m, a))) {
        continue;
      }
      if (a.getShape().dimension() >= 2) {
        matrices.add(a);
      }
      count += a.size();
      bytes += a.size() * a.getDataType().getNumOfBytes();
    }
    return new Parameters(count, bytes);
  }

  /** The KV cache's element type: the model's dtype ({@code model.json}'s {@code dtype}). */
  static DataType cacheType(ModelConfig config) {
    return switch (config.dtype()) {
      case "float32" -> DataType.FLOAT32;
      case "float16" -> DataType.FLOAT16;
      case "bfloat16" -> DataType.BFLOAT16;
      default ->
          throw new ModelException(
              "model " + config.name() + ": dtype '" + config.dtype() + "' has no KV cache type");
    };
  }

  private static boolean sameTensor(ai.djl.ndarray.NDArray a, ai.djl.ndarray.NDArray b) {
    return a.getShape().equals(b.getShape())
        && a.getDataType() == b.getDataType()
        && a.contentEquals(b);
  }

  /** The module's parameters: how many, and their bytes in memory. */
  public Parameters parameters() {
    return parameters;
  }

  /**
   * Loads {@code config.directory()/config.file()} through DJL {@code Criteria} with the PyTorch
   * engine onto the device that {@code deviceOption} names.
   *
   * @param deviceOption {@code auto} (or null/blank: the first GPU when DJL sees one, else the
   *     CPU), {@code cpu}, {@code cuda} or {@code cuda:N}
   * @throws ModelException if the device option is invalid or the engine cannot load the file
   */
  public static DjlLanguageModel load(ModelConfig config, String deviceOption) {
    return load(config, resolveDevice(deviceOption));
  }

  /**
   * Loads onto {@code dev}; see {@link #load(ModelConfig, String)}.
   *
   * @throws ModelException also for a {@code bfloat16} model ({@link #BFLOAT16_REFUSAL})
   */
  public static DjlLanguageModel load(ModelConfig config, Device dev) {
    if (config.dtype().equals("bfloat16")) {
      throw new ModelException("model " + config.name() + ": " + BFLOAT16_REFUSAL);
    }
    Path file = config.directory().resolve(config.file());
    Criteria<NDList, NDList> criteria =
        Criteria.builder()
            .setTypes(NDList.class, NDList.class)
            .optEngine(ENGINE)
            // the directory plus the file name: DJL's PtModel looks for <name> and then <name>.pt
            .optModelPath(config.directory())
            .optModelName(config.file())
            .optDevice(dev)
            // load the weights straight onto the device instead of CPU first
            .optOption("mapLocation", "true")
            .build();
    ZooModel<NDList, NDList> zoo;
    try {
      zoo = criteria.loadModel();
    } catch (ModelNotFoundException | MalformedModelException | IOException | EngineException e) {
      throw new ModelException("model " + config.name() + ": cannot load " + file + ": " + e, e);
    }
    DjlLanguageModel m = new DjlLanguageModel(config, zoo, deviceName(dev));
    log.info(
        "loaded model {} from {} on {} (DJL {}, {} {})",
        config.name(),
        file,
        m.device,
        Engine.getDjlVersion(),
        ENGINE,
        Engine.getEngine(ENGINE).getVersion());
    return m;
  }

  /**
   * Runs this model's CPU work on {@code threads} intra-op threads (from the next call on a thread
   * that has not run it yet): CPU replicas of a model share the cores, so each takes one. libtorch
   * keeps this setting for the process, so every CPU model then uses it.
   */
  public void useIntraOpThreads(int threads) {
    if (threads < 1) {
      throw new IllegalArgumentException("intra-op threads must be at least 1, got " + threads);
    }
    intraOpThreads = threads;
    configuredThread = null;
  }

  /** Every GPU DJL's PyTorch engine sees, or the CPU when it sees none. */
  static List<Device> allDevices() {
    int count = gpuCount();
    if (count == 0) {
      return List.of(Device.cpu());
    }
    List<Device> out = new ArrayList<>();
    for (int i = 0; i < count; i++) {
      out.add(Device.gpu(i));
    }
    return out;
  }

  /**
   * The DJL device for a device option: {@code auto} (or null/blank) picks {@code cuda:0} when
   * DJL's PyTorch engine sees a GPU, else the CPU.
   */
  public static Device resolveDevice(String option) {
    String o = option == null ? "auto" : option.trim().toLowerCase(Locale.ROOT);
    if (o.isEmpty() || o.equals("auto")) {
      return gpuCount() > 0 ? Device.gpu(0) : Device.cpu();
    }
    if (o.equals("cpu")) {
      return Device.cpu();
    }
    if (o.equals("cuda") || o.equals("gpu")) {
      o = "cuda:0";
    }
    if (o.matches("(cuda|gpu):\\d{1,3}")) {
      int id = Integer.parseInt(o.substring(o.indexOf(':') + 1));
      int count = gpuCount();
      if (id >= count) {
        throw new ModelException(
            "device " + option + " requested but DJL's PyTorch engine sees " + count + " GPU(s)");
      }
      return Device.gpu(id);
    }
    throw new ModelException(
        "device option '" + option + "' is not one of auto, cpu, cuda, cuda:N");
  }

  /** {@code cpu} or {@code cuda:N}. */
  static String deviceName(Device device) {
    return device.isGpu() ? "cuda:" + device.getDeviceId() : "cpu";
  }

  private static int gpuCount() {
    try {
      return Engine.getEngine(ENGINE).getGpuCount();
    } catch (EngineException e) {
      throw new ModelException("DJL's PyTorch engine is not available: " + e, e);
    }
  }

  @Override
  public ModelConfig config() {
    return config;
  }

  @Override
  public Tokenizer tokenizer() {
    return tokenizer;
  }

  @Override
  public String device() {
    return device;
  }

  /** Device bytes one KV cache slot takes (keys and values, all layers, all positions). */
  public long bytesPerSlot() {
    return bytesPerSlot;
  }

  /**
   * NDArrays held by this model's NDManager and its sub-managers (weights are held by the
   * TorchScript module, not counted). Constant between steps when nothing leaks.
   */
  int managedArrayCount() {
    return manager.getManagedArrays().size();
  }

  @Override
  public KvCache newCache(int slots) {
    ensureOpen();
    if (slots <= 0) {
      throw new IllegalArgumentException("a KV cache needs at least one slot, got " + slots);
    }
    Shape shape =
        new Shape(
            config.layers(), slots, config.contextLength(), config.kvHeads(), config.headDim());
    PtNDManager cacheManager = manager.newSubManager(manager.getDevice());
    try {
      PtNDArray k = (PtNDArray) cacheManager.zeros(shape, cacheType);
      PtNDArray v = (PtNDArray) cacheManager.zeros(shape, cacheType);
      log.debug(
          "model {}: KV cache of {} slots, {} bytes", config.name(), slots, bytesPerSlot * slots);
      return new Cache(this, cacheManager, k, v, slots, bytesPerSlot * slots);
    } catch (RuntimeException e) {
      cacheManager.close();
      throw new ModelException(
          "model "
              + config.name()
              + ": cannot allocate a KV cache of "
              + slots
              + " slots ("
              + bytesPerSlot * slots
              + " bytes) on "
              + device
              + ": "
              + e,
          e);
    }
  }

  @Override
  public void step(StepBatch batch, KvCache cache, float[][] logits) {
    ensureOpen();
    Cache kv = own(cache);
    int n = batch.tokenCount();
    int b = batch.sequenceCount();
    validate(batch, kv, logits);
    int vocab = config.vocabSize();
    try (PtNDManager m = manager.newSubManager(manager.getDevice())) {
      PtNDArray tokens = tokensIn.array(m, batch.tokens(), n);
      PtNDArray slots = slotsIn.array(m, batch.slots(), n);
      PtNDArray positions = positionsIn.array(m, batch.positions(), n);
      PtNDArray last = lastIndexIn.array(m, batch.lastIndex(), b);
      IValue[] in = {
        IValue.from(tokens),
        IValue.from(slots),
        IValue.from(positions),
        IValue.from(last),
        IValue.from(kv.k),
        IValue.from(kv.v)
      };
      IValue out = null;
      try {
        out = IValueUtils.runMethod(block, STEP_METHOD, in);
        PtNDArray result = out.toTensor(m);
        copyRows(result, b, vocab, logits);
      } finally {
        if (out != null) {
          out.close();
        }
        for (IValue v : in) {
          v.close();
        }
      }
    } catch (EngineException e) {
      throw new ModelException(
          "model "
              + config.name()
              + ": step of "
              + b
              + " sequences, "
              + n
              + " tokens failed: "
              + e.getMessage(),
          e);
    }
  }

  @Override
  public void copyPrefix(KvCache cache, int fromSlot, int toSlot, int positions) {
    ensureOpen();
    Cache kv = own(cache);
    if (fromSlot < 0 || fromSlot >= kv.slots || toSlot < 0 || toSlot >= kv.slots) {
      throw new IllegalArgumentException(
          "slots " + fromSlot + " -> " + toSlot + " outside cache of " + kv.slots + " slots");
    }
    if (fromSlot == toSlot) {
      throw new IllegalArgumentException("cannot copy slot " + fromSlot + " onto itself");
    }
    if (positions < 1 || positions > config.contextLength()) {
      throw new IllegalArgumentException(
          "positions must be in [1, " + config.contextLength() + "], was " + positions);
    }
    NDIndex from = new NDIndex(":, {}, :{}", fromSlot, positions);
    NDIndex to = new NDIndex(":, {}, :{}", toSlot, positions);
    try {
      for (PtNDArray t : new PtNDArray[] {kv.k, kv.v}) {
        try (NDArray src = t.get(from)) {
          t.set(to, src);
        }
      }
      if (device.startsWith("cuda")) {
        // like a step, return once the device work is done, so the caller's timer covers it
        try (NDArray probe = kv.k.get(new NDIndex("0, {}, 0, 0, 0", toSlot))) {
          probe.toFloatArray();
        }
      }
    } catch (EngineException e) {
      throw new ModelException(
          "model "
              + config.name()
              + ": copying "
              + positions
              + " positions of slot "
              + fromSlot
              + " to slot "
              + toSlot
              + " failed: "
              + e.getMessage(),
          e);
    }
  }

  @Override
  public float[] forwardLast(int[] tokens) {
    ensureOpen();
    int n = tokens.length;
    if (n == 0 || n > config.contextLength()) {
      throw new IllegalArgumentException(
          "forwardLast needs 1.." + config.contextLength() + " tokens, got " + n);
    }
    long[] ids = new long[n];
    for (int i = 0; i < n; i++) {
      checkToken(tokens[i], i);
      ids[i] = tokens[i];
    }
    try (PtNDManager m = manager.newSubManager(manager.getDevice())) {
      PtNDArray input = (PtNDArray) m.create(ids, new Shape(1, n));
      IValue in = IValue.from(input);
      IValue out = null;
      try {
        out = IValueUtils.runMethod(block, "forward", in);
        PtNDArray result = out.toTensor(m);
        Shape shape = result.getShape();
        if (shape.dimension() != 3 || shape.get(1) != n || shape.get(2) != config.vocabSize()) {
          throw new ModelException(
              "model "
                  + config.name()
                  + ": forward returned "
                  + shape
                  + ", expected (1, "
                  + n
                  + ", "
                  + config.vocabSize()
                  + ")");
        }
        try (NDArray lastRow = result.get(0, n - 1)) {
          return lastRow.toFloatArray();
        }
      } finally {
        if (out != null) {
          out.close();
        }
        in.close();
      }
    } catch (EngineException e) {
      throw new ModelException(
          "model " + config.name() + ": forward of " + n + " tokens failed: " + e.getMessage(), e);
    }
  }

  @Override
  public void close() {
    if (!closed) {
      closed = true;
      model.close(); // closes the model's NDManager: weights, and any KV cache still open
      // not the tokenizer: a response of the model's last sequences may still be decoding its
      // text on an event loop after the model was unloaded; DJL frees a Hugging Face tokenizer's
      // native memory when it is garbage-collected
      log.info("closed model {} on {}", config.name(), device);
    }
  }

  private void closeTokenizer() {
    if (tokenizer instanceof AutoCloseable c) {
      try {
        c.close();
      } catch (Exception e) {
        log.warn("closing the tokenizer of model {} failed", config.name(), e);
      }
    }
  }

  private void ensureOpen() {
    if (closed) {
      throw new IllegalStateException("model " + config.name() + " is closed");
    }
    Thread current = Thread.currentThread();
    if (current != configuredThread) {
      JniUtils.setGraphExecutorOptimize(GRAPH_OPTIMIZER);
      int threads = intraOpThreads;
      if (threads > 0) {
        JniUtils.setNumThreads(threads);
      }
      configuredThread = current;
    }
  }

  private Cache own(KvCache cache) {
    Objects.requireNonNull(cache, "cache");
    if (!(cache instanceof Cache c) || c.owner != this) {
      throw new IllegalArgumentException("KV cache was not created by model " + config.name());
    }
    if (c.closed) {
      throw new IllegalStateException("KV cache is closed");
    }
    return c;
  }

  private void checkToken(int id, int index) {
    if (id < 0 || id >= config.vocabSize()) {
      throw new IllegalArgumentException(
          "token " + id + " at index " + index + " outside vocabulary of " + config.vocabSize());
    }
  }

  /** Cheap host-side checks so that a bad batch fails with a message, not a native error. */
  private void validate(StepBatch batch, Cache kv, float[][] logits) {
    int n = batch.tokenCount();
    int b = batch.sequenceCount();
    if (n == 0 || b == 0) {
      throw new IllegalArgumentException("empty step: " + n + " tokens, " + b + " sequences");
    }
    if (logits.length < b) {
      throw new IllegalArgumentException(
          "logits has " + logits.length + " rows for " + b + " sequences");
    }
    long[] tokens = batch.tokens();
    long[] slots = batch.slots();
    long[] positions = batch.positions();
    long[] last = batch.lastIndex();
    int context = config.contextLength();
    for (int i = 0; i < n; i++) {
      if (tokens[i] < 0 || tokens[i] >= config.vocabSize()) {
        throw new IllegalArgumentException(
            "token "
                + tokens[i]
                + " at index "
                + i
                + " outside vocabulary of "
                + config.vocabSize());
      }
      if (slots[i] < 0 || slots[i] >= kv.slots) {
        throw new IllegalArgumentException(
            "slot " + slots[i] + " at index " + i + " outside cache of " + kv.slots + " slots");
      }
      if (positions[i] < 0 || positions[i] >= context) {
        throw new IllegalArgumentException(
            "position " + positions[i] + " at index " + i + " outside context of " + context);
      }
    }
    long prev = -1;
    for (int s = 0; s < b; s++) {
      if (last[s] <= prev || last[s] >= n) {
        throw new IllegalArgumentException("lastIndex[" + s + "] = " + last[s] + " is invalid");
      }
      if (logits[s] == null || logits[s].length < config.vocabSize()) {
        throw new IllegalArgumentException(
            "logits[" + s + "] must hold " + config.vocabSize() + " floats");
      }
      prev = last[s];
    }
    if (prev != n - 1) {
      throw new IllegalArgumentException(
          "the last sequence must end at token " + (n - 1) + ", ends at " + prev);
    }
  }

  private void copyRows(PtNDArray result, int rows, int vocab, float[][] logits) {
    Shape shape = result.getShape();
    if (shape.dimension() != 2 || shape.get(0) != rows || shape.get(1) != vocab) {
      throw new ModelException(
          "model "
              + config.name()
              + ": step returned "
              + shape
              + ", expected ("
              + rows
              + ", "
              + vocab
              + ")");
    }
    if (result.getDataType() != DataType.FLOAT32) {
      throw new ModelException(
          "model " + config.name() + ": step returned " + result.getDataType() + ", not float32");
    }
    // on the CPU a direct view of the (contiguous) result; on a GPU a copy to the host, which
    // waits for the step to finish
    ByteBuffer bytes = result.toByteBuffer(true).order(ByteOrder.nativeOrder());
    FloatBuffer floats = bytes.asFloatBuffer();
    for (int r = 0; r < rows; r++) {
      floats.position(r * vocab);
      floats.get(logits[r], 0, vocab);
    }
  }

  /**
   * A reusable direct buffer for one int64 input. On the CPU the tensor made from it shares its
   * memory (no copy), which is safe because every tensor made from it is closed before the next
   * step refills it; on a GPU the data is copied to the device when the tensor is created.
   */
  private static final class InputBuffer {
    private ByteBuffer buffer = ByteBuffer.allocateDirect(8 * 64).order(ByteOrder.nativeOrder());

    PtNDArray array(PtNDManager m, long[] values, int count) {
      int bytes = count * Long.BYTES;
      if (buffer.capacity() < bytes) {
        buffer =
            ByteBuffer.allocateDirect(Math.max(bytes, buffer.capacity() * 2))
                .order(ByteOrder.nativeOrder());
      }
      buffer.clear();
      buffer.asLongBuffer().put(values, 0, count);
      buffer.limit(bytes);
      return m.create(buffer, new Shape(count), DataType.INT64);
    }
  }

  /** Zero-initialised k and v tensors [L, S, C, H, Dh] of the model's dtype on its device. */
  private static final class Cache implements KvCache {
    final DjlLanguageModel owner;
    final PtNDManager manager;
    final PtNDArray k;
    final PtNDArray v;
    final int slots;
    final long bytes;
    boolean closed;

    Cache(
        DjlLanguageModel owner,
        PtNDManager manager,
        PtNDArray k,
        PtNDArray v,
        int slots,
        long bytes) {
      this.owner = owner;
      this.manager = manager;
      this.k = k;
      this.v = v;
      this.slots = slots;
      this.bytes = bytes;
    }

    @Override
    public int slots() {
      return slots;
    }

    @Override
    public long bytes() {
      return bytes;
    }

    @Override
    public void close() {
      if (!closed) {
        closed = true;
        manager.close();
      }
    }
  }
}
