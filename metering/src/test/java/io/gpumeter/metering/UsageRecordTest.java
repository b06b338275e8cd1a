package io.gpumeter.metering;

import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.time.Instant;
import org.junit.jupiter.api.Test;

class UsageRecordTest {
  private static UsageRecord record(long device, long prefill, long decode) {
    Instant t = Instant.parse("2026-11-27T00:00:00Z");
    return new UsageRecord(
        "r1",
        1,
        1,
        "m",
        TimerInfo.cpu("x"),
        "linear",
        device,
        prefill,
        decode,
        3,
        2,
        0,
        2,
        UsageStatus.OK,
        t,
        t);
  }

  @Test
  void deviceTimeMustBePrefillPlusDecode() {
    record(10, 4, 6);
    assertThatThrownBy(() -> record(11, 4, 6)).hasMessageContaining("deviceNs 11");
  }

  @Test
  void negativeTimesAreRejected() {
    assertThatThrownBy(() -> record(-1, -1, 0)).hasMessageContaining("negative");
  }
}
