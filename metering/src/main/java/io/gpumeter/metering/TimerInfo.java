package io.gpumeter.metering;

import java.util.Objects;

/**
 * Provenance of a step measurement, kept on every usage record so an audit can tell how a number
 * was produced.
 *
 * @param timerKind {@code host} (monotonic host clock around a step whose outputs were copied to
 *     the host) or {@code cuda-event} (CUDA events on the stream the model runs on)
 * @param device {@code cpu}, {@code cuda:N}, or {@code cpu:N} for replica N of a model that runs
 *     several replicas on the CPU (one per configured {@code cpu} entry); the label is the device's
 *     key wherever time is broken down per device (ledger rows, reconciliation, metrics)
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

  /**
   * The device's index on this node: {@code N} of {@code cuda:N} (the CUDA ordinal) or of {@code
   * cpu:N} (the CPU replica's number), 0 for plain {@code cpu} and any other label.
   */
  public int deviceIndex() {
    int colon = device.lastIndexOf(':');
    if (colon < 0 || colon == device.length() - 1) {
      return 0;
    }
    for (int i = colon + 1; i < device.length(); i++) {
      if (device.charAt(i) < '0' || device.charAt(i) > '9') {
        return 0;
      }
    }
    String digits = device.substring(colon + 1);
    return digits.length() > 9 ? 0 : Integer.parseInt(digits);
  }

  /** This provenance with another device label (a CPU replica's {@code cpu:N}). */
  public TimerInfo withDevice(String label) {
    return new TimerInfo(timerKind, label, deviceName, deviceUuid, driverVersion, cudaVersion);
  }

  /** The host timer on the CPU. */
  public static TimerInfo cpu(String cpuName) {
    return new TimerInfo("host", "cpu", cpuName, "", "", "");
  }
}
