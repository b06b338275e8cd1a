package io.gpumeter.server;

import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.Budgets;
import io.gpumeter.billing.InsufficientQuotaException;
import io.gpumeter.metering.StepReport;
import io.gpumeter.metering.TimerInfo;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;

/**
 * The budget check of every completion (docs/DESIGN.md, "Budgets"): the estimate, the reservation
 * and what a refusal looks like. The reservation itself is {@code billing.budgets()}'s.
 */
final class BudgetAdmission {
  /** OpenAI's code and type for an account that has nothing left. */
  static final String INSUFFICIENT_QUOTA = "insufficient_quota";

  private BudgetAdmission() {}

  /**
   * Reserves the estimate of a request for {@code account} on model {@code m}: the sum over its
   * prompts of (prompt tokens + {@code max_tokens}) × {@code n}, × the model's recent device-ns per
   * token (the price is applied by the budget, in the account's currency). The outcome is counted
   * in {@code metrics}.
   */
  static CompletableFuture<Budgets.Reservation> reserve(
      Budgets budgets,
      BudgetMetrics metrics,
      ModelEndpoint m,
      long account,
      int[][] prompts,
      int maxTokens,
      int n) {
    Budgets.Meter meter = meter(budgets, m.name(), m.timer());
    long tokens = (PromptList.tokens(prompts) + (long) maxTokens * prompts.length) * n;
    long estimateNs = saturatedMultiply(tokens, meter.nsPerToken());
    return metrics.count(budgets.reserve(meter, account, estimateNs), estimateNs);
  }

  static Budgets.Meter meter(Budgets budgets, String model, TimerInfo timer) {
    return budgets.meter(model, timer.device(), timer.deviceName());
  }

  /**
   * Feeds the model's charged steps into its meter's per-token estimate, then hands each report on
   * to {@code next}.
   */
  static StepListener estimating(Budgets.Meter meter, StepListener next) {
    return report -> {
      if (report.kind() == StepReport.Kind.CHARGED && !report.failed()) {
        meter.observeStep(report.measuredNs(), report.tokens());
      }
      next.onStep(report);
    };
  }

  /**
   * The answer to a refused reservation: 429 {@code insufficient_quota} saying what ran out, or 503
   * {@code billing_unavailable} when the budget could not be read.
   */
  static Throwable refusal(Throwable error) {
    Throwable e =
        error instanceof CompletionException && error.getCause() != null ? error.getCause() : error;
    if (e instanceof InsufficientQuotaException q) {
      return new ApiException(
          HttpResponseStatus.TOO_MANY_REQUESTS,
          INSUFFICIENT_QUOTA,
          q.getMessage(),
          null,
          INSUFFICIENT_QUOTA);
    }
    if (e instanceof BillingException b) {
      return new ApiException(
              HttpResponseStatus.SERVICE_UNAVAILABLE,
              ApiException.SERVER,
              "Completions are not accepted right now: "
                  + b.getMessage()
                  + ". Nothing was generated or charged; retry later.",
              null,
              CompletionsEndpoint.BILLING_UNAVAILABLE)
          .withHeader(HttpHeaderNames.RETRY_AFTER, CompletionsEndpoint.RETRY_AFTER_SECONDS);
    }
    return e;
  }

  private static long saturatedMultiply(long a, long b) {
    long hi = Math.multiplyHigh(a, b);
    long lo = a * b;
    return hi == 0 && lo >= 0 ? lo : Long.MAX_VALUE;
  }
}
