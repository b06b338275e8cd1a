package io.gpumeter.billing.pricing;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.math.BigInteger;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** The money arithmetic and the one rounding rule, on seeded random inputs. */
class MoneyPropertiesTest {
  static final BigInteger BILLION = Money.NANO_MICROS_PER_MICRO;
  static final BigInteger HALF = BigInteger.valueOf(500_000_000L);

  /** Reference: the nearest integer to n / 1e9, exact halves to the even neighbour. */
  static long reference(BigInteger n) {
    BigInteger[] qr = n.divideAndRemainder(BILLION);
    BigInteger q = qr[0];
    BigInteger r = qr[1];
    if (r.signum() < 0) {
      q = q.subtract(BigInteger.ONE);
      r = r.add(BILLION);
    }
    int cmp = r.compareTo(HALF);
    if (cmp > 0 || (cmp == 0 && q.testBit(0))) {
      q = q.add(BigInteger.ONE);
    }
    return q.longValueExact();
  }

  @Test
  void roundingIsHalfEvenToTheNearestMicroUnit() {
    SplittableRandom rnd = new SplittableRandom(20261130L);
    for (int i = 0; i < 200_000; i++) {
      BigInteger n =
          switch (i % 4) {
            case 0 -> BigInteger.valueOf(rnd.nextLong());
            case 1 -> BigInteger.valueOf(rnd.nextLong(-5_000_000_000L, 5_000_000_000L));
            // exact halves and their neighbours
            case 2 ->
                BigInteger.valueOf(rnd.nextLong(-1_000_000, 1_000_000))
                    .multiply(BILLION)
                    .add(HALF)
                    .add(BigInteger.valueOf(rnd.nextInt(-1, 2)));
            default ->
                Money.cost(rnd.nextLong(0, Long.MAX_VALUE / 2), rnd.nextLong(0, 1_000_000_000));
          };
      long r = Money.roundToMicros(n);
      assertThat(r).as("round(%s)", n).isEqualTo(reference(n));
      BigInteger err = n.subtract(BigInteger.valueOf(r).multiply(BILLION)).abs();
      assertThat(err).isLessThanOrEqualTo(HALF);
    }
    assertThat(Money.roundToMicros(BigInteger.valueOf(500_000_000L))).isZero();
    assertThat(Money.roundToMicros(BigInteger.valueOf(1_500_000_000L))).isEqualTo(2);
    assertThat(Money.roundToMicros(BigInteger.valueOf(-500_000_000L))).isZero();
    assertThat(Money.roundToMicros(BigInteger.valueOf(2_500_000_001L))).isEqualTo(3);
  }

  @Test
  void costIsExactBeyondTheRangeOfALong() {
    SplittableRandom rnd = new SplittableRandom(7L);
    for (int i = 0; i < 100_000; i++) {
      long ns = rnd.nextLong(0, Long.MAX_VALUE);
      long price = rnd.nextLong(0, Long.MAX_VALUE);
      BigInteger c = Money.cost(ns, price);
      assertThat(c.divide(BigInteger.valueOf(Math.max(ns, 1))))
          .isEqualTo(ns == 0 ? BigInteger.ZERO : BigInteger.valueOf(price));
      assertThat(c.signum()).isGreaterThanOrEqualTo(0);
    }
    assertThat(Money.cost(Long.MAX_VALUE, Long.MAX_VALUE))
        .isEqualTo(BigInteger.valueOf(Long.MAX_VALUE).pow(2));
    assertThatThrownBy(() -> Money.cost(-1, 1)).isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> Money.cost(1, -1)).isInstanceOf(IllegalArgumentException.class);
  }

  @Test
  void decimalsAreExact() {
    assertThat(Money.decimal(1_234_567)).isEqualTo("1.234567");
    assertThat(Money.decimal(-5)).isEqualTo("-0.000005");
    assertThat(Money.exactDecimal(BigInteger.valueOf(1_700_000_000_000L)))
        .isEqualTo("0.001700000000000");
    assertThat(Money.nanoMicros(3)).isEqualTo(BigInteger.valueOf(3_000_000_000L));
  }
}
