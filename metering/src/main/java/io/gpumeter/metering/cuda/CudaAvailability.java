package io.gpumeter.metering.cuda;

/**
 * Cheap, memoised probe: can this process time steps with CUDA events? It loads JCuda's native
 * driver library (which needs the NVIDIA driver's {@code libcuda.so.1}), calls {@code cuInit} and
 * counts devices. It never throws: where there is no driver, no device, or no JCuda native library
 * for this platform, {@link #isAvailable()} is false and {@link #reason()} says why.
 *
 * <p>To time GPU devices with the host clock without touching the driver, use {@link
 * io.gpumeter.metering.StepTimerFactory#hostOnly()} (the server's {@code timer=host} setting).
 */
public final class CudaAvailability {
  private static volatile Probe probe;

  private CudaAvailability() {}

  /** True when JCuda's driver library loaded, {@code cuInit} succeeded and a device exists. */
  public static boolean isAvailable() {
    return probe().available();
  }

  /** Why CUDA is or is not available, in one line (for logs and skipped tests). */
  public static String reason() {
    return probe().reason();
  }

  /** CUDA devices visible to this process; 0 when unavailable. */
  public static int deviceCount() {
    return probe().deviceCount();
  }

  /** The memoised probe result. */
  public static Probe probe() {
    Probe p = probe;
    if (p == null) {
      synchronized (CudaAvailability.class) {
        p = probe;
        if (p == null) {
          p = run(JCudaDriverApiLoader.INSTANCE);
          probe = p;
        }
      }
    }
    return p;
  }

  /**
   * The outcome of the probe.
   *
   * @param available whether CUDA event timing can work here
   * @param deviceCount devices {@code cuDeviceGetCount} reported (0 when unavailable)
   * @param driverVersion {@code cuDriverGetVersion} formatted as {@code 13.0}, or empty
   * @param reason one line: why not, or what was found
   */
  public record Probe(boolean available, int deviceCount, String driverVersion, String reason) {}

  /** Loads the driver bindings; separate so that tests can fail the load. */
  interface Loader {
    /** Loads JCuda's native library; throws a {@link LinkageError} when it cannot. */
    Calls load();
  }

  /** The three calls the probe makes. */
  interface Calls {
    int init();

    int deviceCount(int[] out);

    int driverVersion(int[] out);

    String errorName(int result);
  }

  static Probe run(Loader loader) {
    Calls calls;
    try {
      calls = loader.load();
    } catch (LinkageError | RuntimeException e) {
      return new Probe(false, 0, "", "JCuda driver library did not load: " + firstLine(e));
    }
    try {
      int r = calls.init();
      if (r != DriverApi.CUDA_SUCCESS) {
        return new Probe(false, 0, "", "cuInit failed: " + calls.errorName(r));
      }
      int[] count = new int[1];
      r = calls.deviceCount(count);
      if (r != DriverApi.CUDA_SUCCESS) {
        return new Probe(false, 0, "", "cuDeviceGetCount failed: " + calls.errorName(r));
      }
      int[] version = new int[1];
      String driver =
          calls.driverVersion(version) == DriverApi.CUDA_SUCCESS
              ? CudaFormat.version(version[0])
              : "";
      if (count[0] <= 0) {
        return new Probe(false, 0, driver, "no CUDA device (driver " + driver + ")");
      }
      return new Probe(true, count[0], driver, count[0] + " CUDA device(s), driver API " + driver);
    } catch (LinkageError | RuntimeException e) {
      return new Probe(false, 0, "", "CUDA driver call failed: " + firstLine(e));
    }
  }

  /**
   * One line for a log or a skip message. JCuda's loader error spans many lines (an attempt from
   * java.library.path, then from the jar); the useful part is the last attempt's cause, such as
   * {@code libcuda.so.1: cannot open shared object file}, so that is appended.
   */
  static String firstLine(Throwable e) {
    String m = e.getMessage();
    if (m == null || m.isBlank()) {
      return e.getClass().getName();
    }
    String[] lines = m.strip().split("\\R");
    String line = lines[0].strip();
    String detail = null;
    for (String l : lines) {
      String t = l.strip();
      if (t.startsWith("java.lang.UnsatisfiedLinkError:")) {
        detail = t.substring("java.lang.UnsatisfiedLinkError:".length()).strip();
      }
    }
    Throwable c = e.getCause();
    if (detail == null && c != null && c.getMessage() != null && !line.contains(c.getMessage())) {
      detail = firstLine(c);
    }
    return e.getClass().getSimpleName() + ": " + line + (detail == null ? "" : " (" + detail + ")");
  }

  /** The real loader: touching {@link jcuda.driver.JCudaDriver} runs its static initialiser. */
  private enum JCudaDriverApiLoader implements Loader {
    INSTANCE;

    @Override
    public Calls load() {
      // JCudaDriver's static initialiser loads libJCudaDriver (from java.library.path, else
      // extracted from the jcuda-natives jar), which needs libcuda.so.1. An Error there is
      // thrown as is the first time and as NoClassDefFoundError afterwards: both LinkageErrors.
      jcuda.driver.JCudaDriver.cuDriverGetVersion(new int[1]);
      return new Calls() {
        @Override
        public int init() {
          return jcuda.driver.JCudaDriver.cuInit(0);
        }

        @Override
        public int deviceCount(int[] out) {
          return jcuda.driver.JCudaDriver.cuDeviceGetCount(out);
        }

        @Override
        public int driverVersion(int[] out) {
          return jcuda.driver.JCudaDriver.cuDriverGetVersion(out);
        }

        @Override
        public String errorName(int result) {
          return CudaFormat.resultName(result);
        }
      };
    }
  }
}
