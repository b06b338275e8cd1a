package io.gpumeter.metering;

import java.util.Objects;

/**
 * A step timer whose provenance names another device label: the timer of CPU replica {@code N} of a
 * model measures like any host timer but reports its device as {@code cpu:N}, so that its steps,
 * its charges and its system time are kept apart from the other replicas'. Closing it closes the
 * timer it wraps.
 */
public final class RelabeledStepTimer implements StepTimer {
  private final StepTimer timer;
  private final TimerInfo info;

  /**
   * @param timer the timer that measures
   * @param device the label its provenance reports instead of its own
   */
  public RelabeledStepTimer(StepTimer timer, String device) {
    this.timer = Objects.requireNonNull(timer, "timer");
    this.info = timer.info().withDevice(Objects.requireNonNull(device, "device"));
  }

  @Override
  public Span begin() {
    return timer.begin();
  }

  @Override
  public TimerInfo info() {
    return info;
  }

  @Override
  public void close() {
    timer.close();
  }
}
