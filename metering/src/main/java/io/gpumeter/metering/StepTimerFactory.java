package io.gpumeter.metering;

/** Picks the timer for a device: the CUDA event timer for {@code cuda:N}, the host timer else. */
@FunctionalInterface
public interface StepTimerFactory {
  StepTimer forDevice(String device);

  /** Host timers only; right for CPU, and the fallback where CUDA timing is unavailable. */
  static StepTimerFactory hostOnly() {
    return device -> {
      if (!device.equals("cpu")) {
        return new HostStepTimer(
            Ticker.system(), new TimerInfo("host", device, device, "", "", ""));
      }
      return HostStepTimer.cpu();
    };
  }

  /**
   * CUDA event timers for {@code cuda:N} where CUDA works in this process, host timers otherwise
   * (with a logged warning); see {@link AutoStepTimerFactory}.
   */
  static StepTimerFactory auto() {
    return new AutoStepTimerFactory();
  }
}
