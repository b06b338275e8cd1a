package io.gpumeter.metering;

/**
 * {@code weight = tokens * (prefill ? prefillPerToken : decodePerToken) + contextPerToken *
 * contextTokens}. With {@code (1, 1, 0)} a step is split by tokens processed (the default); a
 * positive context term charges long-context sequences more for their attention work.
 */
public record LinearWeightPolicy(long prefillPerToken, long decodePerToken, long contextPerToken)
    implements WeightPolicy {

  static final LinearWeightPolicy TOKENS = new LinearWeightPolicy(1, 1, 0);

  public LinearWeightPolicy {
    if (prefillPerToken < 0 || decodePerToken < 0 || contextPerToken < 0) {
      throw new IllegalArgumentException(
          "weights must be >= 0, were prefill="
              + prefillPerToken
              + " decode="
              + decodePerToken
              + " context="
              + contextPerToken);
    }
    if (prefillPerToken == 0 && decodePerToken == 0 && contextPerToken == 0) {
      throw new IllegalArgumentException("at least one weight must be positive");
    }
  }

  @Override
  public long weight(boolean prefill, int tokens, int contextTokens) {
    return (long) tokens * (prefill ? prefillPerToken : decodePerToken)
        + contextPerToken * contextTokens;
  }

  @Override
  public String describe() {
    return "linear(p=" + prefillPerToken + ",d=" + decodePerToken + ",c=" + contextPerToken + ")";
  }
}
