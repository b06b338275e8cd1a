package io.gpumeter.billing;

import java.math.BigInteger;
import java.time.Instant;

/**
 * One charged request as the ledger holds it ({@code usage_records}, with its priced charge from
 * {@code charge_prices} and its void from {@code charge_voids}), for the customer's request log.
 *
 * @param status how the generation ended, as stored: {@code ok}, {@code cancelled}, {@code timeout}
 *     or {@code failed}
 * @param steps the scheduler steps the request took part in
 * @param currency the account's currency (every charge of the account is in it)
 * @param costNanoMicros the exact priced cost (device_ns x unit price, 10<sup>-9</sup> micro-units,
 *     unrounded); null when no price version covered the record (stored unpriced)
 * @param costMicros {@code costNanoMicros} by the one rounding rule ({@code Money.roundToMicros});
 *     null when unpriced
 * @param priceVersionId the price version it was priced with; null when unpriced
 * @param voidReason why the charge was voided ({@code charge_voids.reason}), null when it stands
 * @param batchCompanySum the sum over its steps of the other sequences in each step (V19), null
 *     where not measured; {@link #batchCompany()} is its mean
 * @param kvByteNs the KV-cache bytes it held, integrated over its steps (byte-nanoseconds; 0 for
 *     records stored before V10)
 * @param peakKvBytes the most KV-cache bytes it held at once
 * @param charged how the account paid it ({@code charge_deductions}): the allowance's part, the
 *     price the rest was billed at (the plan's overage price or the price book's) and credits,
 *     postpaid and overspend; null while not deducted (unpriced, or not deducted yet)
 */
public record ChargedRequest(
    String requestId,
    long apiKeyId,
    String model,
    String sessionId,
    String status,
    Instant startedAt,
    Instant finishedAt,
    int promptTokens,
    int completionTokens,
    long deviceNs,
    long prefillNs,
    long decodeNs,
    int steps,
    String currency,
    BigInteger costNanoMicros,
    Long costMicros,
    Long priceVersionId,
    String voidReason,
    Long batchCompanySum,
    long kvByteNs,
    long peakKvBytes,
    ChargeBreakdown charged) {

  /**
   * The mean number of other sequences in the steps the request ran in: {@code batchCompanySum /
   * steps}, exactly, rounded half to even to 3 decimals; null when not measured or without steps.
   */
  public java.math.BigDecimal batchCompany() {
    if (batchCompanySum == null || steps == 0) {
      return null;
    }
    return java.math.BigDecimal.valueOf(batchCompanySum)
        .divide(java.math.BigDecimal.valueOf(steps), 3, java.math.RoundingMode.HALF_EVEN);
  }
}
