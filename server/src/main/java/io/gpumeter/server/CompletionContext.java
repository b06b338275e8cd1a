package io.gpumeter.server;

import io.gpumeter.billing.ApiKeyPrincipal;

/**
 * One generating request as {@code /v1/completions} and {@code /v1/chat/completions} hand it to
 * {@link CompletionsEndpoint#generate}: where it came from, what it asks of which model, and how
 * its answer is written. Built once on the event loop after validation; the admission, submission,
 * follow-up and answer steps all read it instead of a dozen parameters each.
 *
 * @param ex the exchange the answer goes to
 * @param requestId the request's id (the ledger's key for its one charge)
 * @param principal the authenticated API key
 * @param model the model it runs on
 * @param prompts its prompts, tokenized (one for chat); each has {@code extras.n()} choices
 * @param decoding its length, temperature, seed, stream and stop settings
 * @param answer how the endpoint writes its answer (whole or as chunks)
 * @param extras what it asks beyond those basics (session, sampling, n, echo, ticket, logprobs)
 */
record CompletionContext(
    Exchange ex,
    String requestId,
    ApiKeyPrincipal principal,
    ModelEndpoint model,
    int[][] prompts,
    Decoding decoding,
    CompletionsEndpoint.Answer answer,
    CompletionsEndpoint.Extras extras) {

  /**
   * The settings both endpoints parse the same way.
   *
   * @param maxTokens the most tokens each choice generates
   * @param temperature 0 for greedy
   * @param seed the request's seed, or null for a random one
   * @param stream whether (and with what options) the answer is streamed
   * @param stop the request's stop strings
   */
  record Decoding(
      int maxTokens, double temperature, Long seed, StreamParams stream, StopStrings stop) {
    static Decoding of(CompletionParams p) {
      return new Decoding(p.maxTokens(), p.temperature(), p.seed(), p.stream(), p.stop());
    }

    static Decoding of(ChatParams p) {
      return new Decoding(p.maxTokens(), p.temperature(), p.seed(), p.stream(), p.stop());
    }
  }
}
