package io.gpumeter.batching;

import java.util.List;
import java.util.Objects;

/**
 * One generation to run. Validated here so the scheduler never sees an impossible request.
 *
 * @param requestId unique id, also the ledger key
 * @param apiKeyId calling key (fairness: the scheduler gives each key a turn)
 * @param accountId account of the key
 * @param promptTokens prompt, at least one token
 * @param maxTokens tokens to generate at most, at least 1
 * @param temperature 0 for greedy, else softmax temperature (at most 2)
 * @param seed sampling seed
 * @param timeoutNanos time budget from submission, or 0 for the scheduler's default
 * @param listener receives tokens as they are generated (streaming); may be {@link
 *     TokenListener#NONE}
 * @param sessionId the session it belongs to, copied into its {@code UsageRecord}; not blank
 * @param sampling top-p, top-k, penalties and logit bias ({@link SamplingOptions#NONE} for none)
 * @param n choices to generate from the prompt, at least 1: the prompt is prefilled once and its KV
 *     cache copied into the other choices' slots; one record charges all of them. Choice 0 draws
 *     from {@code seed} as a request with {@code n = 1} does; choice {@code i} from its own stream
 *     derived from {@code seed} and {@code i}.
 * @param stop ends a choice when its text reaches a stop string; every choice gets its own ({@link
 *     StopCondition#forChoice}); may be {@link StopCondition#NONE}
 * @param topLogprobs -1 for no logprobs; else every choice's generated tokens carry their {@link
 *     TokenLogprob} with this many alternatives (0 to 20): on its {@link Choice} and, as each token
 *     is generated, to the listener's {@link TokenListener#onChoiceToken}
 * @param morePrompts the prompts after the first ({@code promptTokens}), each at least one token;
 *     empty for a request of one prompt. Each prompt has {@code n} choices: choice {@code i} of
 *     prompt {@code p} has index {@code p * n + i}. All of them are one request with one record.
 * @param promptLogprobs whether each choice also carries the logprobs of its prompt's tokens after
 *     the first ({@link Choice#promptLogprobs}); needs {@code topLogprobs >= 0}. Such a prompt is
 *     prefilled one token per step, since a step returns the logits of a sequence's last position
 *     only.
 */
public record GenerationRequest(
    String requestId,
    long apiKeyId,
    long accountId,
    int[] promptTokens,
    int maxTokens,
    double temperature,
    long seed,
    long timeoutNanos,
    TokenListener listener,
    String sessionId,
    SamplingOptions sampling,
    int n,
    StopCondition stop,
    int topLogprobs,
    List<int[]> morePrompts,
    boolean promptLogprobs) {

  /** A request for one prompt, without the prompt's logprobs. */
  public GenerationRequest(
      String requestId,
      long apiKeyId,
      long accountId,
      int[] promptTokens,
      int maxTokens,
      double temperature,
      long seed,
      long timeoutNanos,
      TokenListener listener,
      String sessionId,
      SamplingOptions sampling,
      int n,
      StopCondition stop,
      int topLogprobs) {
    this(
        requestId,
        apiKeyId,
        accountId,
        promptTokens,
        maxTokens,
        temperature,
        seed,
        timeoutNanos,
        listener,
        sessionId,
        sampling,
        n,
        stop,
        topLogprobs,
        List.of(),
        false);
  }

  /** A request without logprobs. */
  public GenerationRequest(
      String requestId,
      long apiKeyId,
      long accountId,
      int[] promptTokens,
      int maxTokens,
      double temperature,
      long seed,
      long timeoutNanos,
      TokenListener listener,
      String sessionId,
      SamplingOptions sampling,
      int n,
      StopCondition stop) {
    this(
        requestId,
        apiKeyId,
        accountId,
        promptTokens,
        maxTokens,
        temperature,
        seed,
        timeoutNanos,
        listener,
        sessionId,
        sampling,
        n,
        stop,
        -1);
  }

  /** A request without stop strings. */
  public GenerationRequest(
      String requestId,
      long apiKeyId,
      long accountId,
      int[] promptTokens,
      int maxTokens,
      double temperature,
      long seed,
      long timeoutNanos,
      TokenListener listener,
      String sessionId,
      SamplingOptions sampling,
      int n) {
    this(
        requestId,
        apiKeyId,
        accountId,
        promptTokens,
        maxTokens,
        temperature,
        seed,
        timeoutNanos,
        listener,
        sessionId,
        sampling,
        n,
        StopCondition.NONE);
  }

  /** A request for one choice with stop strings, its own session. */
  public GenerationRequest(
      String requestId,
      long apiKeyId,
      long accountId,
      int[] promptTokens,
      int maxTokens,
      double temperature,
      long seed,
      long timeoutNanos,
      TokenListener listener,
      StopCondition stop) {
    this(
        requestId,
        apiKeyId,
        accountId,
        promptTokens,
        maxTokens,
        temperature,
        seed,
        timeoutNanos,
        listener,
        requestId,
        SamplingOptions.NONE,
        1,
        stop);
  }

  /** A request for n choices that is its own session. */
  public GenerationRequest(
      String requestId,
      long apiKeyId,
      long accountId,
      int[] promptTokens,
      int maxTokens,
      double temperature,
      long seed,
      long timeoutNanos,
      TokenListener listener,
      SamplingOptions sampling,
      int n) {
    this(
        requestId,
        apiKeyId,
        accountId,
        promptTokens,
        maxTokens,
        temperature,
        seed,
        timeoutNanos,
        listener,
        requestId,
        sampling,
        n);
  }

  /** A request for one choice that is its own session. */
  public GenerationRequest(
      String requestId,
      long apiKeyId,
      long accountId,
      int[] promptTokens,
      int maxTokens,
      double temperature,
      long seed,
      long timeoutNanos,
      TokenListener listener,
      SamplingOptions sampling) {
    this(
        requestId,
        apiKeyId,
        accountId,
        promptTokens,
        maxTokens,
        temperature,
        seed,
        timeoutNanos,
        listener,
        requestId,
        sampling,
        1);
  }

  /** A request for one choice, with no sampling option beyond temperature, in a given session. */
  public GenerationRequest(
      String requestId,
      long apiKeyId,
      long accountId,
      int[] promptTokens,
      int maxTokens,
      double temperature,
      long seed,
      long timeoutNanos,
      TokenListener listener,
      String sessionId) {
    this(
        requestId,
        apiKeyId,
        accountId,
        promptTokens,
        maxTokens,
        temperature,
        seed,
        timeoutNanos,
        listener,
        sessionId,
        SamplingOptions.NONE,
        1);
  }

  /** A request for one choice, no sampling option beyond temperature, its own session. */
  public GenerationRequest(
      String requestId,
      long apiKeyId,
      long accountId,
      int[] promptTokens,
      int maxTokens,
      double temperature,
      long seed,
      long timeoutNanos,
      TokenListener listener) {
    this(
        requestId,
        apiKeyId,
        accountId,
        promptTokens,
        maxTokens,
        temperature,
        seed,
        timeoutNanos,
        listener,
        requestId,
        SamplingOptions.NONE,
        1);
  }

  public GenerationRequest {
    Objects.requireNonNull(requestId, "requestId");
    Objects.requireNonNull(promptTokens, "promptTokens");
    Objects.requireNonNull(listener, "listener");
    Objects.requireNonNull(sessionId, "sessionId");
    if (sessionId.isBlank()) {
      throw new IllegalArgumentException("blank session id in request " + requestId);
    }
    Objects.requireNonNull(sampling, "sampling");
    Objects.requireNonNull(stop, "stop");
    if (promptTokens.length == 0) {
      throw new IllegalArgumentException("prompt must have at least one token");
    }
    if (maxTokens < 1) {
      throw new IllegalArgumentException("maxTokens must be >= 1, was " + maxTokens);
    }
    if (!(temperature >= 0 && temperature <= 2)) {
      throw new IllegalArgumentException("temperature must be in [0, 2], was " + temperature);
    }
    if (n < 1) {
      throw new IllegalArgumentException("n must be >= 1, was " + n);
    }
    if (topLogprobs < -1 || topLogprobs > LogSoftmax.MAX_TOP) {
      throw new IllegalArgumentException(
          "topLogprobs must be -1 (none) or 0 to " + LogSoftmax.MAX_TOP + ", was " + topLogprobs);
    }
    morePrompts = List.copyOf(morePrompts);
    for (int[] p : morePrompts) {
      if (p.length == 0) {
        throw new IllegalArgumentException("every prompt must have at least one token");
      }
    }
    if (promptLogprobs && topLogprobs < 0) {
      throw new IllegalArgumentException("prompt logprobs need topLogprobs >= 0");
    }
    if (timeoutNanos < 0) {
      throw new IllegalArgumentException("timeoutNanos must be >= 0, was " + timeoutNanos);
    }
  }

  /** How many prompts: 1 + {@code morePrompts}. */
  public int promptCount() {
    return 1 + morePrompts.size();
  }

  /** Prompt {@code p}, 0 being {@code promptTokens}. */
  public int[] prompt(int p) {
    return p == 0 ? promptTokens : morePrompts.get(p - 1);
  }

  /** Sequences the request runs at once: {@code n} for each prompt. */
  public int sequences() {
    return promptCount() * n;
  }
}
