package io.gpumeter.metering;

/**
 * {@code weight = tokens * (prefill ? prefillPerToken : decodePerToken) + contextPerToken *
 * contextTokens + tokenContext * tokens * contextTokens}. With {@code (1, 1, 0, 0)} a step is split
 * by tokens processed (the default); a positive context term charges long-context sequences more
 * for reading their cache, and the tokens×context term charges a prompt chunk for its attention,
 * which grows with its tokens times the positions each attends to (for a decode, one token, it is
 * another per-position cost).
 *
 * <p>Weights are integers (the calibrated ones in picoseconds); a weight that would pass {@link
 * #MAX_WEIGHT} saturates there, so a step of fewer than 2048 sequences never overflows the sum the
 * apportioner forms. At realistic sizes (128-token chunks, a million positions, 100 ps per
 * token×position) a weight is about 10^10, far below.
 */
public record LinearWeightPolicy(
    long prefillPerToken, long decodePerToken, long contextPerToken, long tokenContext)
    implements WeightPolicy {

  /** The largest weight one sequence gets in one step (2^52). */
  public static final long MAX_WEIGHT = 1L << 52;

  static final LinearWeightPolicy TOKENS = new LinearWeightPolicy(1, 1, 0, 0);

  public LinearWeightPolicy {
    if (prefillPerToken < 0 || decodePerToken < 0 || contextPerToken < 0 || tokenContext < 0) {
      throw new IllegalArgumentException(
          "weights must be >= 0, were prefill="
              + prefillPerToken
              + " decode="
              + decodePerToken
              + " context="
              + contextPerToken
              + " tokenContext="
              + tokenContext);
    }
    if (prefillPerToken == 0 && decodePerToken == 0 && contextPerToken == 0 && tokenContext == 0) {
      throw new IllegalArgumentException("at least one weight must be positive");
    }
  }

  /** The form without a tokens×context term (as every policy before it was added). */
  public LinearWeightPolicy(long prefillPerToken, long decodePerToken, long contextPerToken) {
    this(prefillPerToken, decodePerToken, contextPerToken, 0);
  }

  @Override
  public long weight(boolean prefill, int tokens, int contextTokens) {
    try {
      long w =
          Math.addExact(
              Math.multiplyExact((long) tokens, prefill ? prefillPerToken : decodePerToken),
              Math.multiplyExact(contextPerToken, (long) contextTokens));
      if (tokenContext != 0) {
        w =
            Math.addExact(
                w,
                Math.multiplyExact(tokenContext, Math.multiplyExact((long) tokens, contextTokens)));
      }
      return Math.min(w, MAX_WEIGHT);
    } catch (ArithmeticException overflow) {
      return MAX_WEIGHT;
    }
  }

  /**
   * {@code linear(p=…,d=…,c=…)}, with {@code ,tc=…} added when the tokens×context term is not 0 (so
   * a policy without it is named as before the term existed).
   */
  @Override
  public String describe() {
    String base = "linear(p=" + prefillPerToken + ",d=" + decodePerToken + ",c=" + contextPerToken;
    return tokenContext == 0 ? base + ")" : base + ",tc=" + tokenContext + ")";
  }
}
