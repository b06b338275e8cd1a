package io.gpumeter.metering.cuda;

import io.gpumeter.metering.StepTimer;
import io.gpumeter.metering.Ticker;
import io.gpumeter.metering.TimerInfo;
import java.lang.reflect.Field;
import java.util.ArrayDeque;
import java.util.Objects;
import jcuda.NativePointerObject;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUevent;
import jcuda.driver.CUevent_flags;
import jcuda.driver.CUstream;
import jcuda.driver.CUuuid;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Times model steps on an NVIDIA GPU with CUDA events, through JCuda's driver API.
 *
 * <p>Context: the timer retains the device's <em>primary</em> context ({@code
 * cuDevicePrimaryCtxRetain}), the context the CUDA runtime, and so libtorch, uses on that device,
 * and makes it current ({@code cuCtxSetCurrent}) on the calling thread at every {@link #begin()}
 * and {@link Span#end()}, so the scheduler thread may differ from the thread that built the timer
 * and nothing else on that thread can leave another context current under it.
 *
 * <p>Stream: events are recorded on the stream the model runs on. By default that is the legacy
 * default stream (handle 0), where libtorch launches its work unless DJL's {@code
 * ai.djl.pytorch.enable_cuda_stream} is on; the server keeps that property off. For a model run on
 * another stream, pass its handle with {@link Config#withStream(long)}.
 *
 * <p>A span: {@link #begin()} reads the host clock and records a start event; the caller launches
 * the step and copies its outputs to the host (that copy waits for the step's kernels); {@link
 * Span#end()} records an end event, waits for it with {@code cuEventSynchronize} (the events are
 * created with {@code CU_EVENT_BLOCKING_SYNC}, so the thread sleeps instead of spinning; after the
 * host copy the event is normally complete already), and reads {@code cuEventElapsedTime}: a float
 * in milliseconds with a resolution of about half a microsecond, converted to integer nanoseconds.
 * The span therefore covers everything the stream did from the start event to the end event,
 * including gaps in which the GPU waited for the CPU to launch the next kernel: that time is
 * reserved for the batch and billed (metering/README.md).
 *
 * <p>Failures: {@code end()} never throws for a CUDA failure. If any call fails, for example
 * because the step itself broke the context with a sticky error, the span is measured with the host
 * clock instead (the host reading taken at {@code begin()}), the failure is logged (the first ten,
 * then every thousandth) and counted in {@link #stats()}, and the span's events are discarded
 * rather than pooled. A span is never lost (invariant 2).
 *
 * <p>Pool: each span owns a start and an end event; ended spans go back to a pool, so a steady
 * scheduler creates two events once and then none. Overlapping spans are allowed (each takes its
 * own pair). Concurrency: one scheduler thread drives {@code begin}/{@code end}; pool and counters
 * are guarded by this object's monitor, so {@link #close()} and {@link #stats()} may come from
 * another thread. The wait in {@code end()} happens outside the monitor.
 */
public final class CudaStepTimer implements StepTimer {
  private static final Logger log = LoggerFactory.getLogger(CudaStepTimer.class);

  /** Events that block the waiting thread and keep timing (never CU_EVENT_DISABLE_TIMING). */
  static final int EVENT_FLAGS = CUevent_flags.CU_EVENT_BLOCKING_SYNC;

  private final DriverApi driver;
  private final Ticker ticker;
  private final Config config;
  private final CUdevice device = new CUdevice();
  private final CUcontext context = new CUcontext();
  private final CUstream stream;
  private final String deviceLabel;
  private final ArrayDeque<CudaSpan> pool = new ArrayDeque<>();

  private volatile TimerInfo info;
  private boolean runtimeVersionRetried;

  // guarded by this
  private boolean closed;
  private boolean contextRetained;
  private int liveEvents;
  private long spans;
  private long fallbackSpans;

  private CudaStepTimer(Config config, DriverApi driver, Ticker ticker) {
    this.config = Objects.requireNonNull(config, "config");
    this.driver = Objects.requireNonNull(driver, "driver");
    this.ticker = Objects.requireNonNull(ticker, "ticker");
    this.deviceLabel = "cuda:" + config.ordinal();
    this.stream = config.streamHandle() == 0 ? null : streamFromHandle(config.streamHandle());
  }

  /** Opens a timer for device {@code ordinal} on the legacy default stream. */
  public static CudaStepTimer open(int ordinal) {
    return open(Config.forDevice(ordinal));
  }

  /**
   * Opens a timer: {@code cuInit}, {@code cuDeviceGet}, {@code cuDevicePrimaryCtxRetain}, makes the
   * context current on this thread and creates the first pair of events.
   *
   * @throws CudaTimerException if JCuda cannot load or a driver call fails; nothing is left
   *     retained then
   */
  public static CudaStepTimer open(Config config) {
    return open(config, JCudaDriverApi.INSTANCE, Ticker.system());
  }

  static CudaStepTimer open(Config config, DriverApi driver, Ticker ticker) {
    CudaStepTimer t = new CudaStepTimer(config, driver, ticker);
    try {
      t.start();
      return t;
    } catch (RuntimeException | LinkageError e) {
      t.close();
      throw e instanceof CudaTimerException
          ? (CudaTimerException) e
          : new CudaTimerException(t.deviceLabel + ": " + CudaAvailability.firstLine(e), e);
    }
  }

  private void start() {
    check(driver.init(), "cuInit");
    check(driver.deviceGet(device, config.ordinal()), "cuDeviceGet(" + config.ordinal() + ")");
    check(driver.primaryCtxRetain(context, device), "cuDevicePrimaryCtxRetain");
    synchronized (this) {
      contextRetained = true;
    }
    check(driver.ctxSetCurrent(context), "cuCtxSetCurrent");

    byte[] name = new byte[256];
    String gpuName =
        driver.deviceGetName(name, device) == DriverApi.CUDA_SUCCESS
            ? CudaFormat.cString(name)
            : "";
    CUuuid uuid = new CUuuid();
    String gpuUuid =
        driver.deviceGetUuid(uuid, device) == DriverApi.CUDA_SUCCESS
            ? CudaFormat.gpuUuid(uuid.bytes)
            : "";
    int[] version = new int[1];
    String driverVersion =
        driver.driverGetVersion(version) == DriverApi.CUDA_SUCCESS
            ? CudaFormat.version(version[0])
            : "";
    String cuda =
        config.cudaVersion().isEmpty() ? CudaFormat.runtimeVersion() : config.cudaVersion();
    info = new TimerInfo("cuda-event", deviceLabel, gpuName, gpuUuid, driverVersion, cuda);

    CudaSpan first = newSpan();
    if (first.start == null) {
      throw new CudaTimerException(deviceLabel + ": could not create CUDA events");
    }
    synchronized (this) {
      pool.push(first);
    }
    log.info(
        "CUDA event timer on {} ({} {}, driver API {}, CUDA runtime {}), stream {}",
        deviceLabel,
        gpuName,
        gpuUuid,
        driverVersion,
        cuda.isEmpty() ? "unknown yet" : cuda,
        config.streamHandle() == 0
            ? "legacy default"
            : "0x" + Long.toHexString(config.streamHandle()));
  }

  private void check(int result, String call) {
    if (result != DriverApi.CUDA_SUCCESS) {
      throw new CudaTimerException(
          deviceLabel + ": " + call + " failed: " + driver.errorName(result));
    }
  }

  @Override
  public Span begin() {
    CudaSpan s;
    synchronized (this) {
      if (closed) {
        throw new IllegalStateException("CUDA timer for " + deviceLabel + " is closed");
      }
      s = pool.poll();
    }
    if (s == null) {
      s = newSpan();
    }
    s.open = true;
    s.failure = null;
    s.hostStart = ticker.read();
    if (s.start != null) {
      try {
        int r = driver.ctxSetCurrent(context);
        if (r != DriverApi.CUDA_SUCCESS) {
          s.failure = "cuCtxSetCurrent at begin: " + driver.errorName(r);
        } else {
          r = driver.eventRecord(s.start, stream);
          if (r != DriverApi.CUDA_SUCCESS) {
            s.failure = "cuEventRecord(start): " + driver.errorName(r);
          }
        }
      } catch (RuntimeException | LinkageError e) {
        s.failure = "begin: " + CudaAvailability.firstLine(e);
      }
    } else {
      s.failure = "no CUDA events could be created";
    }
    return s;
  }

  private long finish(CudaSpan s) {
    if (!s.open) {
      throw new IllegalStateException("span already ended");
    }
    s.open = false;
    String failure = s.failure;
    if (failure == null) {
      try {
        int r = driver.ctxSetCurrent(context);
        if (r != DriverApi.CUDA_SUCCESS) {
          failure = "cuCtxSetCurrent at end: " + driver.errorName(r);
        } else if ((r = driver.eventRecord(s.end, stream)) != DriverApi.CUDA_SUCCESS) {
          failure = "cuEventRecord(end): " + driver.errorName(r);
        } else if ((r = driver.eventSynchronize(s.end)) != DriverApi.CUDA_SUCCESS) {
          failure = "cuEventSynchronize: " + driver.errorName(r);
        } else if ((r = driver.eventElapsedTime(s.ms, s.start, s.end)) != DriverApi.CUDA_SUCCESS) {
          failure = "cuEventElapsedTime: " + driver.errorName(r);
        } else {
          float ms = s.ms[0];
          if (ms >= 0f && ms < Float.POSITIVE_INFINITY) {
            long ns = toNanos(ms);
            recycle(s);
            return ns;
          }
          failure = "cuEventElapsedTime returned " + ms + " ms";
        }
      } catch (RuntimeException | LinkageError e) {
        failure = "end: " + CudaAvailability.firstLine(e);
      }
    }
    long hostNs = Math.max(0L, ticker.read() - s.hostStart);
    fallback(s, failure, hostNs);
    return hostNs;
  }

  /** Milliseconds from {@code cuEventElapsedTime} to nanoseconds, rounded to the nearest. */
  static long toNanos(float milliseconds) {
    return Math.round((double) milliseconds * 1_000_000.0);
  }

  private void recycle(CudaSpan s) {
    boolean destroy;
    synchronized (this) {
      spans++;
      destroy = closed;
      if (!destroy) {
        pool.push(s);
      }
    }
    if (destroy) {
      destroyEvents(s);
    }
  }

  private void fallback(CudaSpan s, String failure, long hostNs) {
    long n;
    synchronized (this) {
      spans++;
      n = ++fallbackSpans;
    }
    if (n <= 10 || n % 1000 == 0) {
      log.warn(
          "CUDA event timing failed on {} ({}); this span ({} ns) was measured with the host clock"
              + " [fallback #{}]",
          deviceLabel,
          failure,
          hostNs,
          n);
    }
    // Events of a failed span may belong to a broken context: never reuse them.
    destroyEvents(s);
  }

  private CudaSpan newSpan() {
    CUevent start = new CUevent();
    CUevent end = new CUevent();
    boolean startMade = false;
    try {
      if (driver.ctxSetCurrent(context) == DriverApi.CUDA_SUCCESS
          && driver.eventCreate(start, EVENT_FLAGS) == DriverApi.CUDA_SUCCESS) {
        startMade = true;
        if (driver.eventCreate(end, EVENT_FLAGS) == DriverApi.CUDA_SUCCESS) {
          synchronized (this) {
            liveEvents += 2;
          }
          return new CudaSpan(start, end);
        }
      }
    } catch (RuntimeException | LinkageError e) {
      log.warn("creating CUDA events on {} failed: {}", deviceLabel, CudaAvailability.firstLine(e));
    }
    if (startMade) {
      safeDestroy(start);
    }
    return new CudaSpan(null, null);
  }

  private void destroyEvents(CudaSpan s) {
    if (s.start == null) {
      return;
    }
    try {
      driver.ctxSetCurrent(context);
    } catch (RuntimeException | LinkageError e) {
      // destroying below may still work, or fail quietly
    }
    safeDestroy(s.start);
    safeDestroy(s.end);
    synchronized (this) {
      liveEvents -= 2;
    }
  }

  private void safeDestroy(CUevent e) {
    try {
      driver.eventDestroy(e);
    } catch (RuntimeException | LinkageError ex) {
      // the context is gone or broken; nothing left to free from here
    }
  }

  @Override
  public TimerInfo info() {
    TimerInfo i = info;
    if (i == null) {
      return new TimerInfo("cuda-event", deviceLabel, "", "", "", config.cudaVersion());
    }
    if (i.cudaVersion().isEmpty() && !runtimeVersionRetried && stats().spans() > 0) {
      // The runtime is usually mapped by now (libtorch ran a step); look once more.
      runtimeVersionRetried = true;
      String v = CudaFormat.runtimeVersion();
      if (!v.isEmpty()) {
        i =
            new TimerInfo(
                i.timerKind(), i.device(), i.deviceName(), i.deviceUuid(), i.driverVersion(), v);
        info = i;
      }
    }
    return i;
  }

  /** Counters for metrics and tests. */
  public synchronized Stats stats() {
    return new Stats(spans, fallbackSpans, liveEvents, pool.size());
  }

  /**
   * Destroys the pooled events and releases this timer's retain of the primary context (libtorch
   * keeps its own). A span still open is measured normally if the context outlives this call and
   * its events are destroyed when it ends. Idempotent.
   */
  @Override
  public void close() {
    CudaSpan[] pooled;
    boolean release;
    synchronized (this) {
      if (closed) {
        return;
      }
      closed = true;
      pooled = pool.toArray(new CudaSpan[0]);
      pool.clear();
      release = contextRetained;
      contextRetained = false;
    }
    for (CudaSpan s : pooled) {
      destroyEvents(s);
    }
    if (release) {
      try {
        int r = driver.primaryCtxRelease(device);
        if (r != DriverApi.CUDA_SUCCESS) {
          log.warn("cuDevicePrimaryCtxRelease on {} failed: {}", deviceLabel, driver.errorName(r));
        }
      } catch (RuntimeException | LinkageError e) {
        log.warn(
            "cuDevicePrimaryCtxRelease on {} failed: {}",
            deviceLabel,
            CudaAvailability.firstLine(e));
      }
    }
  }

  /** A handle from a raw {@code CUstream}/{@code cudaStream_t} pointer value. */
  private static CUstream streamFromHandle(long handle) {
    // JCuda keeps CUstream(long) package-private; its public constructors cannot take a raw value.
    try {
      CUstream s = new CUstream();
      Field f = NativePointerObject.class.getDeclaredField("nativePointer");
      f.setAccessible(true);
      f.setLong(s, handle);
      return s;
    } catch (ReflectiveOperationException | RuntimeException e) {
      throw new CudaTimerException(
          "cannot make a CUstream for handle 0x" + Long.toHexString(handle), e);
    }
  }

  /** The raw handle of a stream, for tests and logs (0 for the legacy default stream). */
  static long handleOf(CUstream stream) {
    if (stream == null) {
      return 0L;
    }
    try {
      Field f = NativePointerObject.class.getDeclaredField("nativePointer");
      f.setAccessible(true);
      return f.getLong(stream);
    } catch (ReflectiveOperationException | RuntimeException e) {
      return -1L;
    }
  }

  /**
   * Counters since the timer opened.
   *
   * @param spans spans ended
   * @param fallbackSpans spans measured with the host clock because a CUDA call failed
   * @param liveEvents CUDA events created and not yet destroyed (two per span in the pool or open)
   * @param pooledSpans spans waiting in the pool
   */
  public record Stats(long spans, long fallbackSpans, int liveEvents, int pooledSpans) {}

  /**
   * Which device and stream to time. Immutable; build with {@link #forDevice(int)}.
   *
   * @param ordinal CUDA device ordinal, as in {@code cuda:N}
   * @param streamHandle raw {@code CUstream} the model's work runs on; 0 is the legacy default
   *     stream
   * @param cudaVersion CUDA runtime version for provenance; empty to detect it (see {@link
   *     CudaFormat#runtimeVersion()})
   */
  public record Config(int ordinal, long streamHandle, String cudaVersion) {
    public Config {
      if (ordinal < 0) {
        throw new IllegalArgumentException("CUDA device ordinal must be >= 0, was " + ordinal);
      }
      cudaVersion = cudaVersion == null ? "" : cudaVersion.trim();
    }

    /** Device {@code ordinal}, legacy default stream, runtime version detected. */
    public static Config forDevice(int ordinal) {
      return new Config(ordinal, 0L, "");
    }

    /**
     * Records on the stream with this raw handle instead (only when the model runs there, as with
     * DJL's {@code ai.djl.pytorch.enable_cuda_stream=true}; the server keeps that off).
     */
    public Config withStream(long handle) {
      return new Config(ordinal, handle, cudaVersion);
    }

    /** States the CUDA runtime version instead of detecting it. */
    public Config withCudaVersion(String version) {
      return new Config(ordinal, streamHandle, version);
    }
  }

  /** The reused span: a start and an end event and the host reading for a fallback. */
  private final class CudaSpan implements Span {
    final CUevent start;
    final CUevent end;
    final float[] ms = new float[1];
    long hostStart;
    boolean open;
    String failure;

    CudaSpan(CUevent start, CUevent end) {
      this.start = start;
      this.end = end;
    }

    @Override
    public long end() {
      return finish(this);
    }
  }
}
