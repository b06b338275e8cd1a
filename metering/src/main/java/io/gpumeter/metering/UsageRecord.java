package io.gpumeter.metering;

import java.time.Instant;
import java.util.Objects;

/**
 * What one request used, as measured. Immutable; the ledger is idempotent on {@link #requestId}.
 *
 * <p>Invariants checked at construction: every time is non-negative and {@code deviceNs ==
 * prefillNs + decodeNs}.
 *
 * @param requestId unique id (also returned to the client); the ledger's primary key
 * @param apiKeyId the key that made the request
 * @param accountId the account owning the key
 * @param model model name
 * @param timer provenance: timer kind, device, GPU name/UUID, driver and CUDA versions
 * @param weightPolicy name and parameters of the weight policy used to split steps
 * @param deviceNs total device time charged (sum of this request's shares of every step)
 * @param prefillNs part of {@code deviceNs} from steps in which it processed prompt tokens
 * @param decodeNs part of {@code deviceNs} from steps in which it generated a token
 * @param promptTokens prompt length in tokens
 * @param completionTokens tokens generated
 * @param queueNs time from submission to the first step it took part in (wall clock, not charged)
 * @param steps number of steps it took part in
 * @param status how it ended
 * @param startedAt when it was submitted
 * @param finishedAt when it left the scheduler
 * @param sessionId the session the request belongs to (the client's {@code X-Session-Id} or {@code
 *     user}, else the request id); never blank
 * @param kvByteNs KV-cache bytes the sequence held, integrated over its steps (byte-nanoseconds of
 *     step time); 0 where not measured
 * @param peakKvBytes the most KV-cache bytes the sequence held at once; 0 where not measured
 * @param batchCompanySum the sum over its steps of the other sequences in each step (sequences in
 *     the step − 1; a request's own other choices count), an exact integer: divided by {@code
 *     steps} it is the mean company the request had in its batches; {@link #NOT_MEASURED} (−1)
 *     where not measured (records made outside the scheduler, or read from an older outbox version)
 */
public record UsageRecord(
    String requestId,
    long apiKeyId,
    long accountId,
    String model,
    TimerInfo timer,
    String weightPolicy,
    long deviceNs,
    long prefillNs,
    long decodeNs,
    int promptTokens,
    int completionTokens,
    long queueNs,
    int steps,
    UsageStatus status,
    Instant startedAt,
    Instant finishedAt,
    String sessionId,
    long kvByteNs,
    long peakKvBytes,
    long batchCompanySum) {

  /** {@link #batchCompanySum} of a record whose batches were not measured. */
  public static final long NOT_MEASURED = -1;

  /** A record whose batch company was not measured. */
  public UsageRecord(
      String requestId,
      long apiKeyId,
      long accountId,
      String model,
      TimerInfo timer,
      String weightPolicy,
      long deviceNs,
      long prefillNs,
      long decodeNs,
      int promptTokens,
      int completionTokens,
      long queueNs,
      int steps,
      UsageStatus status,
      Instant startedAt,
      Instant finishedAt,
      String sessionId,
      long kvByteNs,
      long peakKvBytes) {
    this(
        requestId,
        apiKeyId,
        accountId,
        model,
        timer,
        weightPolicy,
        deviceNs,
        prefillNs,
        decodeNs,
        promptTokens,
        completionTokens,
        queueNs,
        steps,
        status,
        startedAt,
        finishedAt,
        sessionId,
        kvByteNs,
        peakKvBytes,
        NOT_MEASURED);
  }

  /** A record without a session of its own (its session is its request id) and no KV measure. */
  public UsageRecord(
      String requestId,
      long apiKeyId,
      long accountId,
      String model,
      TimerInfo timer,
      String weightPolicy,
      long deviceNs,
      long prefillNs,
      long decodeNs,
      int promptTokens,
      int completionTokens,
      long queueNs,
      int steps,
      UsageStatus status,
      Instant startedAt,
      Instant finishedAt) {
    this(
        requestId,
        apiKeyId,
        accountId,
        model,
        timer,
        weightPolicy,
        deviceNs,
        prefillNs,
        decodeNs,
        promptTokens,
        completionTokens,
        queueNs,
        steps,
        status,
        startedAt,
        finishedAt,
        requestId,
        0,
        0,
        NOT_MEASURED);
  }

  public UsageRecord {
    Objects.requireNonNull(requestId, "requestId");
    Objects.requireNonNull(model, "model");
    Objects.requireNonNull(timer, "timer");
    Objects.requireNonNull(weightPolicy, "weightPolicy");
    Objects.requireNonNull(status, "status");
    Objects.requireNonNull(startedAt, "startedAt");
    Objects.requireNonNull(finishedAt, "finishedAt");
    Objects.requireNonNull(sessionId, "sessionId");
    if (sessionId.isBlank()) {
      throw new IllegalArgumentException("blank session id in record " + requestId);
    }
    if (kvByteNs < 0 || peakKvBytes < 0) {
      throw new IllegalArgumentException("negative KV measure in record " + requestId);
    }
    if (deviceNs < 0 || prefillNs < 0 || decodeNs < 0 || queueNs < 0) {
      throw new IllegalArgumentException("negative time in record " + requestId);
    }
    if (deviceNs != prefillNs + decodeNs) {
      throw new IllegalArgumentException(
          "deviceNs " + deviceNs + " != prefillNs " + prefillNs + " + decodeNs " + decodeNs);
    }
    if (promptTokens < 0 || completionTokens < 0 || steps < 0) {
      throw new IllegalArgumentException("negative count in record " + requestId);
    }
    if (batchCompanySum < NOT_MEASURED) {
      throw new IllegalArgumentException(
          "batch company "
              + batchCompanySum
              + " below "
              + NOT_MEASURED
              + " in record "
              + requestId);
    }
  }
}
