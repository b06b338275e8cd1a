package io.gpumeter.batching;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import org.junit.jupiter.api.Test;

class LogSoftmaxTest {
  @Test
  void matchesTheDefinitionAndKeepsTheTopKInOrderWithTiesToTheLowerId() {
    float[] row = {1f, 3f, 2f, 3f, -1f, 0.5f};
    float[] copy = row.clone();
    TokenLogprob lp = new LogSoftmax(row.length).of(row, 2, 3);
    assertThat(row).isEqualTo(copy);
    double sum = 0;
    for (float x : row) {
      sum += Math.exp(x);
    }
    double lse = Math.log(sum);
    assertThat((double) lp.logprob()).isCloseTo(2 - lse, within(1e-6));
    assertThat(lp.topTokens()).containsExactly(1, 3, 2);
    assertThat((double) lp.topLogprobs()[0]).isCloseTo(3 - lse, within(1e-6));
    assertThat((double) lp.topLogprobs()[2]).isCloseTo(2 - lse, within(1e-6));
  }

  @Test
  void zeroAlternativesAndMoreThanTheVocabulary() {
    float[] row = {0f, 0f};
    LogSoftmax ls = new LogSoftmax(2);
    assertThat(ls.of(row, 0, 0).topTokens()).isEmpty();
    TokenLogprob all = ls.of(row, 1, 20);
    assertThat(all.topTokens()).containsExactly(0, 1);
    assertThat((double) all.logprob()).isCloseTo(Math.log(0.5), within(1e-6));
  }
}
