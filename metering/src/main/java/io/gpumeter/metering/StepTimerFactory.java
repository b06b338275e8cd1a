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
}
