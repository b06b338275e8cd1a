package io.gpumeter.metering;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.MathContext;
import java.util.Arrays;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Example;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.LongRange;

class ApportionerProperties {

  @Provide
  Arbitrary<long[]> weights() {
    Arbitrary<Long> small = Arbitraries.longs().between(0, 2_000);
    Arbitrary<Long> large = Arbitraries.longs().between(0, Long.MAX_VALUE / 1024);
    return Arbitraries.oneOf(small, large, Arbitraries.just(0L))
        .array(long[].class)
        .ofMinSize(1)
        .ofMaxSize(256);
  }

  @Provide
  Arbitrary<Long> totals() {
    return Arbitraries.oneOf(
        Arbitraries.longs().between(0, 10_000),
        Arbitraries.longs().between(0, 10_000_000_000L),
        Arbitraries.longs().between(0, Long.MAX_VALUE / 2));
  }

  @Property(tries = 2000)
  void sharesAreNonNegativeSumExactlyAndAreWithinOneNanosecondOfProportional(
      @ForAll("totals") long total, @ForAll("weights") long[] weights) {
    long sumW = 0;
    for (long w : weights) {
      sumW = Math.addExact(sumW, w);
    }
    long[] shares = Apportioner.split(total, weights);

    BigInteger sum = BigInteger.ZERO;
    for (long s : shares) {
      assertThat(s).isNotNegative();
      sum = sum.add(BigInteger.valueOf(s));
    }
    assertThat(sum).isEqualTo(BigInteger.valueOf(total));

    long[] effective = weights.clone();
    long effectiveSum = sumW;
    if (sumW == 0) {
      Arrays.fill(effective, 1);
      effectiveSum = weights.length;
    }
    for (int i = 0; i < weights.length; i++) {
      BigDecimal exact =
          new BigDecimal(BigInteger.valueOf(total).multiply(BigInteger.valueOf(effective[i])))
              .divide(BigDecimal.valueOf(effectiveSum), MathContext.DECIMAL128);
      BigDecimal diff = exact.subtract(BigDecimal.valueOf(shares[i])).abs();
      assertThat(diff).isLessThan(BigDecimal.ONE);
    }
  }

  @Property(tries = 500)
  void equalWeightsDifferByAtMostOneAndLowerIndexWinsTies(
      @ForAll @LongRange(min = 0, max = 1_000_000) long total,
      @ForAll @LongRange(min = 1, max = 64) long n) {
    long[] weights = new long[(int) n];
    Arrays.fill(weights, 7);
    long[] shares = Apportioner.split(total, weights);
    for (int i = 1; i < n; i++) {
      assertThat(shares[i - 1]).isGreaterThanOrEqualTo(shares[i]);
      assertThat(shares[0] - shares[i]).isLessThanOrEqualTo(1);
    }
  }

  /** The rule written the slow, obvious way: repeatedly give 1 ns to the largest remainder. */
  private static long[] reference(long total, long[] weights) {
    int n = weights.length;
    BigInteger sumW = BigInteger.ZERO;
    for (long w : weights) {
      sumW = sumW.add(BigInteger.valueOf(w));
    }
    long[] eff = weights.clone();
    if (sumW.signum() == 0) {
      Arrays.fill(eff, 1);
      sumW = BigInteger.valueOf(n);
    }
    long[] shares = new long[n];
    BigInteger[] rem = new BigInteger[n];
    long assigned = 0;
    for (int i = 0; i < n; i++) {
      BigInteger[] qr =
          BigInteger.valueOf(total).multiply(BigInteger.valueOf(eff[i])).divideAndRemainder(sumW);
      shares[i] = qr[0].longValueExact();
      rem[i] = qr[1];
      assigned += shares[i];
    }
    for (long k = assigned; k < total; k++) {
      int best = -1;
      for (int i = 0; i < n; i++) {
        if (rem[i] != null && (best < 0 || rem[i].compareTo(rem[best]) > 0)) {
          best = i;
        }
      }
      shares[best]++;
      rem[best] = null;
    }
    return shares;
  }

  @Property(tries = 2000)
  void matchesTheReferenceRuleExactlyIncludingTieBreaks(
      @ForAll @LongRange(min = 0, max = 100_000) long total,
      @ForAll("tiedWeights") long[] weights) {
    assertThat(Apportioner.split(total, weights)).containsExactly(reference(total, weights));
  }

  @Provide
  Arbitrary<long[]> tiedWeights() {
    // few distinct values, many sequences: lots of equal remainders and large leftovers
    return Arbitraries.longs().between(0, 5).array(long[].class).ofMinSize(1).ofMaxSize(200);
  }

  @Example
  void largestRemaindersGetTheLeftover() {
    // 10 ns by 1:1:1 → 3.33 each; one leftover ns goes to the first (ties → lowest index)
    assertThat(Apportioner.split(10, new long[] {1, 1, 1})).containsExactly(4, 3, 3);
    // 100 ns by 1:2:3 → 16.67, 33.33, 50 → remainders 4/6, 2/6, 0 → first gets the extra
    assertThat(Apportioner.split(100, new long[] {1, 2, 3})).containsExactly(17, 33, 50);
    // a prefill chunk of 127 tokens and one decode token
    assertThat(Apportioner.split(1_000_000, new long[] {127, 1})).containsExactly(992_188, 7_812);
  }

  @Example
  void rejectsNegativeInputsAndEmptyStepsWithTime() {
    assertThatThrownBy(() -> Apportioner.split(-1, new long[] {1}))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("-1");
    assertThatThrownBy(() -> Apportioner.split(5, new long[] {1, -2}))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("weight[1]");
    assertThatThrownBy(() -> Apportioner.split(5, new long[0]))
        .isInstanceOf(IllegalArgumentException.class);
    assertThat(Apportioner.split(0, new long[0])).isEmpty();
  }

  @Example
  void allZeroWeightsSplitEqually() {
    assertThat(Apportioner.split(9, new long[] {0, 0, 0})).containsExactly(3, 3, 3);
  }
}
