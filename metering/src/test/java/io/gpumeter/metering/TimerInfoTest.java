package io.gpumeter.metering;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/**
 * The device index of a charge comes from its device label (the ledger's generated {@code
 * device_index} column, V15, applies the same rule), and a relabelled timer measures as the one it
 * wraps.
 */
class TimerInfoTest {

  @Test
  void deviceIndexComesFromTheLabel() {
    assertThat(TimerInfo.cpu("x").deviceIndex()).isZero();
    assertThat(TimerInfo.cpu("x").withDevice("cpu:1").deviceIndex()).isEqualTo(1);
    assertThat(new TimerInfo("cuda-event", "cuda:7", "GPU", "GPU-7", "", "").deviceIndex())
        .isEqualTo(7);
    assertThat(new TimerInfo("host", "cuda", "GPU", "", "", "").deviceIndex()).isZero();
    assertThat(new TimerInfo("host", "cpu:", "c", "", "", "").deviceIndex()).isZero();
    assertThat(new TimerInfo("host", "cpu:x1", "c", "", "", "").deviceIndex()).isZero();
    assertThat(new TimerInfo("host", "cpu:12345678901", "c", "", "", "").deviceIndex()).isZero();
  }

  @Test
  void aRelabelledTimerKeepsEverythingButTheLabel() {
    StepTimer host = HostStepTimer.cpu();
    RelabeledStepTimer t = new RelabeledStepTimer(host, "cpu:3");
    assertThat(t.info().device()).isEqualTo("cpu:3");
    assertThat(t.info().deviceIndex()).isEqualTo(3);
    assertThat(t.info().deviceName()).isEqualTo(host.info().deviceName());
    assertThat(t.info().timerKind()).isEqualTo(host.info().timerKind());
    assertThat(t.begin().end()).isNotNegative();
  }
}
