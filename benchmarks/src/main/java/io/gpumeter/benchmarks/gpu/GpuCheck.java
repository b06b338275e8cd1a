package io.gpumeter.benchmarks.gpu;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.inference.Predictor;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.repository.zoo.Criteria;
import ai.djl.repository.zoo.ZooModel;
import ai.djl.translate.NoopTranslator;
import io.gpumeter.metering.HostStepTimer;
import io.gpumeter.metering.StepTimer;
import io.gpumeter.metering.StepTimerFactory;
import io.gpumeter.metering.Ticker;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.cuda.CudaAvailability;
import io.gpumeter.metering.cuda.CudaStepTimer;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;

/**
 * The Java side of tools/gpu-check/run.sh. One subcommand per check, each in its own JVM (a native
 * crash in one does not hide the others):
 *
 * <pre>
 *   info                                    CUDA probe, the timer's provenance, the factory's choice
 *   djl --model F.pt --input F --expected F [--rows R] [--device cpu]
 *                                           DJL's PyTorch engine on cuda:0: matmul, TorchScript forward
 *   fidelity --workload memset|matmul [--bytes B | --n N] --repeats K --iters I --warmup W
 *                                           the CUDA timer's spans over a fixed workload
 *   overhead --bytes B --repeats K --steps S --blocks R
 *                                           steps/s with the CUDA timer vs a timer that does nothing
 * </pre>
 *
 * <p>Each prints human-readable lines and one or more {@code RESULT check=NAME key=value ...}
 * lines; a failure prints {@code RESULT check=NAME status=FAIL reason=...} and exits 1.
 */
public final class GpuCheck {
  private GpuCheck() {}

  public static void main(String[] args) throws Exception {
    if (args.length == 0) {
      System.err.println("usage: GpuCheck info|djl|fidelity|overhead [--key value ...]");
      System.exit(2);
    }
    Map<String, String> opt = options(args);
    String check = args[0];
    try {
      switch (check) {
        case "info" -> info();
        case "djl" -> djl(opt);
        case "fidelity" -> fidelity(opt);
        case "overhead" -> overhead(opt);
        default -> throw new IllegalArgumentException("unknown check " + check);
      }
    } catch (Throwable t) {
      // the full trace goes to the check's log on the GPU machine (stdout is captured there)
      java.io.StringWriter trace = new java.io.StringWriter();
      t.printStackTrace(new java.io.PrintWriter(trace));
      System.out.println(trace);
      String which = opt.containsKey("workload") ? " workload=" + opt.get("workload") : "";
      which += opt.containsKey("label") ? " label=" + opt.get("label") : "";
      result(check, "status=FAIL" + which + " reason=" + word(t.toString()));
      System.out.flush();
      System.exit(1);
    }
    System.out.flush();
    System.exit(0); // DJL and CUDA leave non-daemon threads behind on some versions
  }

  private static void info() {
    CudaAvailability.Probe p = CudaAvailability.probe();
    System.out.println("CUDA probe: " + p);
    if (!p.available()) {
      result("info", "status=FAIL reason=" + word(p.reason()));
      System.exit(1);
    }
    try (CudaStepTimer timer = CudaStepTimer.open(0)) {
      StepTimer.Span span = timer.begin();
      long ns = span.end();
      TimerInfo i = timer.info();
      System.out.println("timer info: " + i + "; empty span " + ns + " ns; " + timer.stats());
      result(
          "info",
          "status=OK gpu="
              + word(i.deviceName())
              + " uuid="
              + i.deviceUuid()
              + " driver_api="
              + i.driverVersion()
              + " cuda_runtime="
              + word(i.cudaVersion().isEmpty() ? "unknown" : i.cudaVersion())
              + " empty_span_ns="
              + ns);
    }
    try (StepTimer auto = StepTimerFactory.auto().forDevice("cuda:0")) {
      System.out.println("StepTimerFactory.auto() for cuda:0: " + auto.info());
      result(
          "auto",
          "status="
              + ("cuda-event".equals(auto.info().timerKind()) ? "OK" : "FAIL")
              + " timer="
              + auto.info().timerKind());
    }
  }

  private static void djl(Map<String, String> opt) throws Exception {
    System.out.println(
        "PYTORCH_LIBRARY_PATH="
            + System.getenv("PYTORCH_LIBRARY_PATH")
            + " PYTORCH_VERSION="
            + System.getenv("PYTORCH_VERSION")
            + " PYTORCH_FLAVOR="
            + System.getenv("PYTORCH_FLAVOR"));
    long t0 = System.nanoTime();
    Engine engine = Engine.getEngine("PyTorch");
    long loadMs = (System.nanoTime() - t0) / 1_000_000;
    String libtorch = "?";
    try {
      libtorch = ai.djl.pytorch.jni.LibUtils.getLibtorchPath();
    } catch (RuntimeException | LinkageError e) {
      // reported as ?
    }
    System.out.println(
        "engine "
            + engine.getEngineName()
            + " "
            + engine.getVersion()
            + " loaded in "
            + loadMs
            + " ms from "
            + libtorch
            + "; GPUs seen: "
            + engine.getGpuCount());
    // --device cpu only exercises this code path on a machine without a GPU
    boolean onCpu = "cpu".equals(opt.get("device"));
    if (!onCpu && engine.getGpuCount() < 1) {
      result("djl", "status=FAIL reason=engine_sees_no_gpu libtorch=" + word(libtorch));
      System.exit(1);
    }
    Device gpu = onCpu ? Device.cpu() : Device.gpu(0);
    float sum;
    try (NDManager m = NDManager.newBaseManager(gpu, "PyTorch")) {
      NDArray a = m.ones(new Shape(256, 256));
      sum = a.matMul(a).sum().getFloat(); // 256 * 256 * 256
      System.out.println("ones(256,256) @ ones(256,256) summed on " + a.getDevice() + ": " + sum);
    }
    String forward = "skipped";
    double maxDiff = -1;
    if (opt.containsKey("model")) {
      Path model = Path.of(opt.get("model"));
      float[] input = floats(Path.of(opt.get("input")));
      float[] expected = floats(Path.of(opt.get("expected")));
      int rows = Integer.parseInt(opt.getOrDefault("rows", "8"));
      Criteria<NDList, NDList> criteria =
          Criteria.builder()
              .setTypes(NDList.class, NDList.class)
              .optModelPath(model)
              .optEngine("PyTorch")
              .optDevice(gpu)
              .optOption("mapLocation", "true")
              .optTranslator(new NoopTranslator())
              .build();
      try (ZooModel<NDList, NDList> zoo = criteria.loadModel();
          Predictor<NDList, NDList> predictor = zoo.newPredictor()) {
        NDManager mm = zoo.getNDManager();
        NDArray x = mm.create(input, new Shape(rows, input.length / rows));
        NDList out = predictor.predict(new NDList(x));
        NDArray y = out.singletonOrThrow();
        float[] got = y.toFloatArray();
        maxDiff = 0;
        for (int i = 0; i < expected.length; i++) {
          maxDiff = Math.max(maxDiff, Math.abs(got[i] - expected[i]));
        }
        forward = (got.length == expected.length && maxDiff < 1e-3) ? "ok" : "mismatch";
        System.out.println(
            "TorchScript forward on "
                + y.getDevice()
                + ": "
                + got.length
                + " values, max |diff| vs"
                + " torch "
                + maxDiff);
      }
    }
    boolean ok = sum == 256f * 256f * 256f && !"mismatch".equals(forward);
    result(
        "djl",
        "status="
            + (ok ? "OK" : "FAIL")
            + " engine="
            + word(engine.getVersion())
            + " load_ms="
            + loadMs
            + " gpus="
            + engine.getGpuCount()
            + " matmul_sum="
            + sum
            + " forward="
            + forward
            + String.format(Locale.ROOT, " max_diff=%.2e", maxDiff)
            + " libtorch="
            + word(libtorch));
  }

  private static void fidelity(Map<String, String> opt) {
    String kind = opt.getOrDefault("workload", "memset");
    int repeats = Integer.parseInt(opt.getOrDefault("repeats", "8"));
    int iters = Integer.parseInt(opt.getOrDefault("iters", "50"));
    int warmup = Integer.parseInt(opt.getOrDefault("warmup", "10"));
    try (CudaStepTimer timer = CudaStepTimer.open(0);
        Workload w = workload(kind, opt)) {
      for (int i = 0; i < warmup; i++) {
        StepTimer.Span s = timer.begin();
        w.step(repeats);
        s.end();
      }
      long[] event = new long[iters];
      long[] host = new long[iters];
      for (int i = 0; i < iters; i++) {
        long h = System.nanoTime();
        StepTimer.Span s = timer.begin();
        try {
          w.step(repeats);
        } finally {
          event[i] = s.end();
        }
        host[i] = System.nanoTime() - h;
      }
      SpanStats e = SpanStats.of(event);
      SpanStats h = SpanStats.of(host);
      System.out.printf(
          Locale.ROOT,
          "%d x %s per step, %d steps: CUDA event median %.4f ms (p10 %.4f, p90 %.4f);"
              + " host clock median %.4f ms; %s%n",
          repeats,
          w.describe(),
          iters,
          e.medianMs(),
          e.p10Ms(),
          e.p90Ms(),
          h.medianMs(),
          timer.stats());
      result(
          "fidelity",
          "status="
              + (timer.stats().fallbackSpans() == 0 ? "OK" : "FAIL")
              + " workload="
              + kind
              + " repeats="
              + repeats
              + " iters="
              + iters
              + " "
              + e.fields("event")
              + " "
              + h.fields("host")
              + " fallbacks="
              + timer.stats().fallbackSpans());
    }
  }

  private static Workload workload(String kind, Map<String, String> opt) {
    return switch (kind) {
      case "memset" ->
          new MemsetWorkload(Long.parseLong(opt.getOrDefault("bytes", String.valueOf(1L << 30))));
      case "matmul" ->
          new DjlMatmulWorkload(Integer.parseInt(opt.getOrDefault("n", "4096")), Device.gpu(0));
      default -> throw new IllegalArgumentException("unknown workload " + kind);
    };
  }

  /**
   * Steps per second with the CUDA timer around each step vs a timer that does nothing, in
   * alternating blocks so that clock and thermal drift hit both alike.
   */
  private static void overhead(Map<String, String> opt) {
    long bytes = Long.parseLong(opt.getOrDefault("bytes", String.valueOf(256L << 20)));
    int repeats = Integer.parseInt(opt.getOrDefault("repeats", "4"));
    int steps = Integer.parseInt(opt.getOrDefault("steps", "200"));
    int blocks = Integer.parseInt(opt.getOrDefault("blocks", "10"));
    String label = opt.getOrDefault("label", "step");
    try (CudaStepTimer cuda = CudaStepTimer.open(0);
        MemsetWorkload w = new MemsetWorkload(bytes)) {
      StepTimer none = new NoopStepTimer();
      StepTimer host = new HostStepTimer(Ticker.system(), TimerInfo.cpu("host"));
      run(none, w, repeats, steps); // warm-up: JIT, clocks
      run(cuda, w, repeats, steps);
      long noneNs = 0;
      long cudaNs = 0;
      long hostNs = 0;
      long measured = 0;
      for (int b = 0; b < blocks; b++) {
        noneNs += run(none, w, repeats, steps)[0];
        long[] c = run(cuda, w, repeats, steps);
        cudaNs += c[0];
        measured += c[1];
        hostNs += run(host, w, repeats, steps)[0];
      }
      long total = (long) steps * blocks;
      double noneRate = total / (noneNs / 1e9);
      double cudaRate = total / (cudaNs / 1e9);
      double hostRate = total / (hostNs / 1e9);
      double perSpanUs = (cudaNs - noneNs) / 1e3 / total;
      double stepMs = noneNs / 1e6 / total;
      System.out.printf(
          Locale.ROOT,
          "%s: %d x %s per step (%.4f ms wall): no timer %.1f steps/s, CUDA timer %.1f"
              + " steps/s (%.2f%%, %+.2f us per span), host timer %.1f steps/s; CUDA spans averaged %.4f ms; %s%n",
          label,
          repeats,
          w.describe(),
          stepMs,
          noneRate,
          cudaRate,
          100 * cudaRate / noneRate,
          perSpanUs,
          hostRate,
          measured / 1e6 / total,
          cuda.stats());
      result(
          "overhead",
          String.format(
              Locale.ROOT,
              "status=OK label=%s step_ms=%.4f none_steps_per_s=%.1f cuda_steps_per_s=%.1f ratio_pct=%.2f"
                  + " per_span_us=%.2f host_steps_per_s=%.1f fallbacks=%d",
              label,
              stepMs,
              noneRate,
              cudaRate,
              100 * cudaRate / noneRate,
              perSpanUs,
              hostRate,
              cuda.stats().fallbackSpans()));
    }
  }

  /** Returns {wall ns, sum of measured ns}. */
  private static long[] run(StepTimer timer, Workload w, int repeats, int steps) {
    long measured = 0;
    long t0 = System.nanoTime();
    for (int i = 0; i < steps; i++) {
      StepTimer.Span s = timer.begin();
      try {
        w.step(repeats);
      } finally {
        measured += s.end();
      }
    }
    return new long[] {System.nanoTime() - t0, measured};
  }

  private static float[] floats(Path file) throws IOException {
    ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(file)).order(ByteOrder.LITTLE_ENDIAN);
    float[] f = new float[b.remaining() / 4];
    b.asFloatBuffer().get(f);
    return f;
  }

  private static Map<String, String> options(String[] args) {
    Map<String, String> m = new HashMap<>();
    for (int i = 1; i < args.length; i++) {
      if (args[i].startsWith("--") && i + 1 < args.length) {
        m.put(args[i].substring(2), args[++i]);
      } else {
        throw new IllegalArgumentException("expected --key value, got " + args[i]);
      }
    }
    return m;
  }

  private static void result(String check, String fields) {
    System.out.println("RESULT check=" + check + " " + fields);
  }

  /** A value without spaces, for key=value output. */
  private static String word(String s) {
    String w = s == null ? "" : s.replaceAll("\\s+", "_");
    return w.length() > 300 ? w.substring(0, 300) : w;
  }
}
