package io.gpumeter.metering;

import java.util.Objects;

/**
 * Provenance of a step measurement, kept on every usage record so an audit can tell how a number
 * was produced.
 *
 * @param timerKind {@code host} (monotonic host clock around a step whose outputs were copied to
 *     the host) or {@code cuda-event} (CUDA events on the stream the model runs on)
 * @param device {@code cpu} or {@code cuda:N}
 * @param deviceName human readable device name (CPU model or GPU name)
 * @param deviceUuid GPU UUID, or empty on CPU
 * @param driverVersion CUDA driver version, or empty on CPU
 * @param cudaVersion CUDA runtime version, or empty on CPU
 */
public record TimerInfo(
    String timerKind,
    String device,
    String deviceName,
    String deviceUuid,
    String driverVersion,
    String cudaVersion) {

  public TimerInfo {
    Objects.requireNonNull(timerKind, "timerKind");
    Objects.requireNonNull(device, "device");
    deviceName = deviceName == null ? "" : deviceName;
    deviceUuid = deviceUuid == null ? "" : deviceUuid;
    driverVersion = driverVersion == null ? "" : driverVersion;
    cudaVersion = cudaVersion == null ? "" : cudaVersion;
  }

  /** The host timer on the CPU. */
  public static TimerInfo cpu(String cpuName) {
    return new TimerInfo("host", "cpu", cpuName, "", "", "");
  }
}
