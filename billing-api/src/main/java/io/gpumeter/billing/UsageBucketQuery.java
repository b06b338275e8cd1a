package io.gpumeter.billing;

import java.time.Instant;
import java.util.EnumSet;
import java.util.List;
import java.util.Objects;
import java.util.Set;

/**
 * A bucketed usage query, always inside one account.
 *
 * @param accountId the caller's account: nothing outside it is ever read (invariant 9)
 * @param apiKeyId the only key whose usage is read (an inference key's own id), or null for every
 *     key of the account (an account-admin key)
 * @param start first bucket's start, inclusive, on a boundary of {@code width}
 * @param end last bucket's end, exclusive, on a boundary of {@code width}, after {@code start}
 * @param width bucket width
 * @param groupBy fields to group by (empty: one result per bucket)
 * @param models only these models (empty: all)
 * @param apiKeyIds only these keys (empty: all the query may read)
 */
public record UsageBucketQuery(
    long accountId,
    Long apiKeyId,
    Instant start,
    Instant end,
    BucketWidth width,
    Set<UsageGroup> groupBy,
    List<String> models,
    List<Long> apiKeyIds) {

  public UsageBucketQuery {
    Objects.requireNonNull(start, "start");
    Objects.requireNonNull(end, "end");
    Objects.requireNonNull(width, "width");
    groupBy = groupBy.isEmpty() ? Set.of() : Set.copyOf(EnumSet.copyOf(groupBy));
    models = List.copyOf(models);
    apiKeyIds = List.copyOf(apiKeyIds);
    if (!width.isBoundary(start) || !width.isBoundary(end)) {
      throw new IllegalArgumentException(
          "start " + start + " and end " + end + " must be on " + width.apiName() + " boundaries");
    }
    if (!end.isAfter(start)) {
      throw new IllegalArgumentException("end " + end + " is not after start " + start);
    }
  }

  /**
   * Whether the hourly rollup can answer (1h or 1d buckets, not grouped by session); otherwise the
   * raw records are scanned.
   */
  public boolean fromRollup() {
    return width != BucketWidth.MINUTE && !groupBy.contains(UsageGroup.SESSION_ID);
  }
}
