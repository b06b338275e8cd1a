package io.gpumeter.batching;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.math.BigInteger;
import org.junit.jupiter.api.Test;

class KvMeterTest {

  @Test
  void sumsBytesTimesNanosecondsExactlyAndKeepsThePeak() {
    KvMeter m = new KvMeter();
    m.add(4096L * 7, 1_234_567);
    m.add(4096L * 8, 2_000_001);
    m.add(4096L * 3, 5);
    assertThat(m.byteNs()).isEqualTo(4096L * 7 * 1_234_567 + 4096L * 8 * 2_000_001 + 4096L * 3 * 5);
    assertThat(m.peakBytes()).isEqualTo(4096L * 8);
    assertThat(m.saturated()).isFalse();
  }

  @Test
  void exactUpToTheLongBoundAndSaturatesInsteadOfWrappingPastIt() {
    KvMeter m = new KvMeter();
    long bytes = 1L << 31;
    long ns = (Long.MAX_VALUE / bytes); // the largest product that fits
    m.add(bytes, ns);
    assertThat(BigInteger.valueOf(m.byteNs()))
        .isEqualTo(BigInteger.valueOf(bytes).multiply(BigInteger.valueOf(ns)));
    assertThat(m.saturated()).isFalse();
    m.add(bytes, ns); // the sum overflows
    assertThat(m.byteNs()).isEqualTo(Long.MAX_VALUE);
    assertThat(m.saturated()).isTrue();

    KvMeter big = new KvMeter();
    big.add(1L << 40, 1L << 30); // the product alone overflows
    assertThat(big.byteNs()).isEqualTo(Long.MAX_VALUE);
    assertThat(big.saturated()).isTrue();
    assertThat(big.peakBytes()).isEqualTo(1L << 40);
  }

  @Test
  void negativeInputIsRefused() {
    assertThatThrownBy(() -> new KvMeter().add(-1, 5)).isInstanceOf(IllegalArgumentException.class);
  }
}
