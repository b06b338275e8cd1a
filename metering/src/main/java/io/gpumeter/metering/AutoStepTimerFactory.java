package io.gpumeter.metering;

import io.gpumeter.metering.cuda.CudaAvailability;
import io.gpumeter.metering.cuda.CudaStepTimer;
import java.util.Objects;
import java.util.function.IntFunction;
import java.util.function.Supplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The default {@link StepTimerFactory}: {@code cpu} gets {@link HostStepTimer#cpu()}; {@code
 * cuda:N} gets a {@link CudaStepTimer} when {@link CudaAvailability} says CUDA works in this
 * process and device {@code N} exists, else a host timer with a logged warning (the step still
 * copies its outputs to the host, so the host clock around it is an upper bound of the device time;
 * its records say {@code host}, so an audit can tell).
 *
 * <p>Nothing CUDA is touched for {@code cpu}: the probe runs on the first {@code cuda:N} request.
 */
public final class AutoStepTimerFactory implements StepTimerFactory {
  private static final Logger log = LoggerFactory.getLogger(AutoStepTimerFactory.class);
  private static final Pattern CUDA = Pattern.compile("cuda(?::(\\d+))?");

  private final Supplier<CudaAvailability.Probe> probe;
  private final IntFunction<StepTimer> cudaTimers;

  public AutoStepTimerFactory() {
    this(CudaAvailability::probe, CudaStepTimer::open);
  }

  /** For tests: a given probe and way of opening CUDA timers. */
  AutoStepTimerFactory(Supplier<CudaAvailability.Probe> probe, IntFunction<StepTimer> cudaTimers) {
    this.probe = Objects.requireNonNull(probe, "probe");
    this.cudaTimers = Objects.requireNonNull(cudaTimers, "cudaTimers");
  }

  /**
   * @throws IllegalArgumentException for a device that is neither {@code cpu} nor {@code cuda[:N]}
   */
  @Override
  public StepTimer forDevice(String device) {
    Objects.requireNonNull(device, "device");
    if (device.equals("cpu")) {
      return HostStepTimer.cpu();
    }
    int ordinal = cudaOrdinal(device);
    String label = "cuda:" + ordinal;
    CudaAvailability.Probe p = probe.get();
    if (!p.available()) {
      log.warn(
          "no CUDA event timer for {} ({}); timing steps with the host clock", label, p.reason());
      return hostTimer(label, p.driverVersion());
    }
    if (ordinal >= p.deviceCount()) {
      log.warn(
          "no CUDA event timer for {}: only {} CUDA device(s) visible; timing steps with the host clock",
          label,
          p.deviceCount());
      return hostTimer(label, p.driverVersion());
    }
    if (Boolean.getBoolean("ai.djl.pytorch.enable_cuda_stream")) {
      log.warn(
          "ai.djl.pytorch.enable_cuda_stream=true: the model runs on a stream of its own while the"
              + " timer records on the legacy default stream; spans stay bounded by the host copy of"
              + " the outputs, but keep the property off to time the model's own stream");
    }
    try {
      return cudaTimers.apply(ordinal);
    } catch (RuntimeException e) {
      log.warn(
          "CUDA event timer for {} failed to open ({}); timing steps with the host clock",
          label,
          e.toString());
      return hostTimer(label, p.driverVersion());
    }
  }

  /** {@code cuda} is device 0; {@code cuda:N} is device N. */
  static int cudaOrdinal(String device) {
    Matcher m = CUDA.matcher(device);
    if (!m.matches()) {
      throw new IllegalArgumentException("unknown device '" + device + "': expected cpu or cuda:N");
    }
    if (m.group(1) == null) {
      return 0;
    }
    try {
      return Integer.parseInt(m.group(1));
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(
          "unknown device '" + device + "': ordinal out of range", e);
    }
  }

  private static StepTimer hostTimer(String device, String driverVersion) {
    return new HostStepTimer(
        Ticker.system(), new TimerInfo("host", device, device, "", driverVersion, ""));
  }
}
