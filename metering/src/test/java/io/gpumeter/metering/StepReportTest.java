package io.gpumeter.metering;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

class StepReportTest {
  @Test
  void aChargedReportHoldsTheSharesAndTheirSum() {
    MutableStepReport report = new MutableStepReport("m", "cpu", 4);
    long[] shares = {300, 200, 500, 999}; // the last one is outside the step
    report.fillCharged(1_000, shares, 3, 17, false);
    shares[0] = 0; // the scheduler reuses its array; the report has its own copy
    assertThat(report.kind()).isEqualTo(StepReport.Kind.CHARGED);
    assertThat(report.measuredNs()).isEqualTo(1_000);
    assertThat(report.chargedNs()).isEqualTo(1_000);
    assertThat(report.systemNs()).isZero();
    assertThat(report.sequences()).isEqualTo(3);
    assertThat(report.share(0)).isEqualTo(300);
    assertThat(report.share(2)).isEqualTo(500);
    assertThat(report.tokens()).isEqualTo(17);
    assertThatThrownBy(() -> report.share(3)).isInstanceOf(IndexOutOfBoundsException.class);
  }

  @Test
  void sharesThatDoNotSumToTheMeasurementAreRejected() {
    MutableStepReport report = new MutableStepReport("m", "cpu", 2);
    assertThatThrownBy(() -> report.fillCharged(1_000, new long[] {400, 500}, 2, 2, false))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("900")
        .hasMessageContaining("1000");
    assertThatThrownBy(() -> report.fillCharged(0, new long[3], 3, 3, false))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> report.fillCharged(0, new long[2], 0, 0, false))
        .isInstanceOf(IllegalArgumentException.class);
  }

  @Test
  void aCopyDoesNotChangeWhenTheReportIsReused() {
    MutableStepReport report = new MutableStepReport("m", "cuda:0", 2);
    report.fillCharged(10, new long[] {6, 4}, 2, 5, true);
    StepReport kept = report.copy();
    report.fillCharged(7, new long[] {7}, 1, 1, false);
    assertThat(kept.measuredNs()).isEqualTo(10);
    assertThat(kept.sequences()).isEqualTo(2);
    assertThat(kept.share(0)).isEqualTo(6);
    assertThat(kept.share(1)).isEqualTo(4);
    assertThat(kept.failed()).isTrue();
    assertThat(kept.device()).isEqualTo("cuda:0");
    assertThat(report.measuredNs()).isEqualTo(7);
  }

  @Test
  void aSystemReportChargesNobody() {
    StepReport r = StepReport.system("m", "cpu", 1_234);
    assertThat(r.kind()).isEqualTo(StepReport.Kind.SYSTEM);
    assertThat(r.measuredNs()).isEqualTo(1_234);
    assertThat(r.systemNs()).isEqualTo(1_234);
    assertThat(r.chargedNs()).isZero();
    assertThat(r.sequences()).isZero();
    assertThatThrownBy(() -> StepReport.system("m", "cpu", -1))
        .isInstanceOf(IllegalArgumentException.class);
  }

  @Test
  void countersAddUpReportsAndCountOnlyChargedSteps() {
    DeviceTimeCounters counters = new DeviceTimeCounters();
    counters.record(StepReport.system("m", "cpu", 5_000));
    MutableStepReport report = new MutableStepReport("m", "cpu", 3);
    counters.record(report.fillCharged(900, new long[] {300, 300, 300}, 3, 40, false));
    counters.record(report.fillCharged(100, new long[] {100}, 1, 1, false));
    DeviceTimeCounters.Snapshot s = counters.snapshot();
    assertThat(s.measuredNs()).isEqualTo(6_000);
    assertThat(s.chargedNs()).isEqualTo(1_000);
    assertThat(s.systemNs()).isEqualTo(5_000);
    assertThat(s.steps()).isEqualTo(2);
    assertThat(s.stepTokens()).isEqualTo(41);
    assertThat(s.stepSequences()).isEqualTo(4);
    assertThat(s.multiSequenceSteps()).isEqualTo(1);
  }
}
