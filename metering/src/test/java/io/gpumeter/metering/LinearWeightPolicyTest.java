package io.gpumeter.metering;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.LongRange;
import net.jqwik.api.constraints.Size;
import org.junit.jupiter.api.Test;

class LinearWeightPolicyTest {

  @Test
  void theTokensTimesContextTermWeighsAChunkByItsTokensTimesItsPositions() {
    LinearWeightPolicy p = new LinearWeightPolicy(6_000, 45_000, 30, 3);
    // prefill chunk of 128 tokens ending at position 900: 128·6000 + 900·30 + 128·900·3
    assertThat(p.weight(true, 128, 900)).isEqualTo(128L * 6_000 + 900L * 30 + 128L * 900 * 3);
    // a decode at position 900: 45000 + 900·30 + 900·3
    assertThat(p.weight(false, 1, 900)).isEqualTo(45_000L + 900L * 30 + 900L * 3);
    assertThat(p.describe()).isEqualTo("linear(p=6000,d=45000,c=30,tc=3)");
    // Without the term a policy is named as before it existed, and equals the 3-argument form.
    assertThat(new LinearWeightPolicy(1, 1, 0)).isEqualTo(new LinearWeightPolicy(1, 1, 0, 0));
    assertThat(WeightPolicy.tokens().describe()).isEqualTo("linear(p=1,d=1,c=0)");
    assertThat(new LinearWeightPolicy(0, 0, 0, 1).weight(true, 4, 10)).isEqualTo(40);
  }

  @Test
  void negativeOrAllZeroWeightsAreRefusedAndHugeWeightsSaturate() {
    assertThatThrownBy(() -> new LinearWeightPolicy(1, 1, 0, -1))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("tokenContext=-1");
    assertThatThrownBy(() -> new LinearWeightPolicy(0, 0, 0, 0))
        .isInstanceOf(IllegalArgumentException.class);
    LinearWeightPolicy huge = new LinearWeightPolicy(1, 1, 1, Long.MAX_VALUE / 4);
    assertThat(huge.weight(true, 1_000, 1_000_000)).isEqualTo(LinearWeightPolicy.MAX_WEIGHT);
    assertThat(new LinearWeightPolicy(Long.MAX_VALUE, 1, 0).weight(true, 3, 3))
        .isEqualTo(LinearWeightPolicy.MAX_WEIGHT);
  }

  /** Conservation holds with the new term: the shares of any step add up to its time exactly. */
  @Property(tries = 500)
  void aStepSplitByATokenContextPolicyAddsUpExactly(
      @ForAll @LongRange(min = 0, max = 10_000_000_000L) long stepNs,
      @ForAll @LongRange(min = 0, max = 1_000_000_000L) long q,
      @ForAll @Size(min = 1, max = 64) int[] contexts,
      @ForAll @IntRange(min = 1, max = 512) int chunk) {
    LinearWeightPolicy p = new LinearWeightPolicy(6_000_000, 45_000_000, 30_000, q);
    long[] w = new long[contexts.length];
    for (int i = 0; i < w.length; i++) {
      int ctx = Math.floorMod(contexts[i], 1 << 20) + chunk;
      w[i] = p.weight(i % 3 == 0, i % 3 == 0 ? chunk : 1, ctx);
      assertThat(w[i]).isBetween(0L, LinearWeightPolicy.MAX_WEIGHT);
    }
    long[] shares = Apportioner.split(stepNs, w);
    long sum = 0;
    for (long s : shares) {
      assertThat(s).isNotNegative();
      sum += s;
    }
    assertThat(sum).isEqualTo(stepNs);
  }
}
