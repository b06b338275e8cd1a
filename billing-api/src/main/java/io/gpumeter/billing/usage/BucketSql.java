package io.gpumeter.billing.usage;

import io.gpumeter.billing.UsageBucketQuery;
import io.gpumeter.billing.UsageGroup;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.util.ArrayList;
import java.util.List;

/**
 * The SQL of a bucketed usage or cost query, and its parameters.
 *
 * <p>From the rollup (1h/1d, not by session): {@code usage_hourly} minus {@code
 * usage_hourly_voided} (invariant 15), rows of the account (and key) in {@code [start, end)},
 * truncated to the bucket in UTC. Index: {@code usage_hourly_account_hour_idx} for an account, the
 * primary key for one key; a month is at most 744 hours per (key, model, device).
 *
 * <p>From the raw records (1m, or by session): {@code usage_records} whose {@code finished_at} is
 * in {@code [start, end)}, without the voided ones ({@code charge_voids}); a record written before
 * V8 has no session and counts as its own ({@code coalesce(session_id, request_id)}). Partition
 * pruning and the BRIN index on {@code finished_at} bound the scan to the range.
 *
 * <p>Costs ({@link #prepareCost}, V14): from the rollup, {@code cost_hourly} (the priced cost of
 * the charges that are not voided, kept by triggers; indexed as {@code usage_hourly}); from the raw
 * records, {@code usage_records} joined with {@code charge_prices} (a record no price version
 * covered has no price row and costs nothing), without the voided ones. The sum is the exact cost
 * in nano-micro-units; the caller rounds it once per result.
 *
 * <p>Always ordered by bucket, then the grouped fields in the order of {@link UsageGroup}.
 */
final class BucketSql {
  private BucketSql() {}

  /** Output columns: bucket, model, api_key_id, device, session_id, then the six sums. */
  static PreparedStatement prepare(Connection c, UsageBucketQuery q) throws SQLException {
    return prepare(c, q, false);
  }

  /**
   * Output columns: bucket, model, api_key_id, device, session_id, the number of priced charges
   * (int8), then the sum of their exact costs (numeric, nano-micro-units).
   */
  static PreparedStatement prepareCost(Connection c, UsageBucketQuery q) throws SQLException {
    return prepare(c, q, true);
  }

  private static PreparedStatement prepare(Connection c, UsageBucketQuery q, boolean cost)
      throws SQLException {
    boolean rollup = q.fromRollup();
    List<Object> params = new ArrayList<>();
    String inner;
    List<Object> all;
    if (cost && rollup) {
      String where = where(q, "", "hour", params);
      all = new ArrayList<>(params);
      inner =
          "SELECT hour AS t, api_key_id, model, device, NULL::text AS session_id, requests,"
              + " cost_nmicros FROM cost_hourly WHERE "
              + where;
    } else if (cost) {
      String where = where(q, "r.", "finished_at", params);
      all = new ArrayList<>(params);
      inner =
          "SELECT r.finished_at AS t, r.api_key_id, r.model, r.device,"
              + " coalesce(r.session_id, r.request_id) AS session_id, 1 AS requests,"
              + " p.cost_nmicros FROM usage_records r JOIN charge_prices p"
              + " ON p.request_id = r.request_id AND p.finished_at = r.finished_at WHERE "
              + where
              + " AND NOT EXISTS (SELECT 1 FROM charge_voids v WHERE v.request_id = r.request_id)";
    } else if (rollup) {
      String where = where(q, "", "hour", params);
      all = new ArrayList<>(params);
      inner =
          "SELECT hour AS t, api_key_id, model, device, NULL::text AS session_id, requests,"
              + " device_ns, prefill_ns, decode_ns, prompt_tokens, completion_tokens"
              + " FROM usage_hourly WHERE "
              + where
              + " UNION ALL SELECT hour, api_key_id, model, device, NULL::text, -requests,"
              + " -device_ns, -prefill_ns, -decode_ns, -prompt_tokens, -completion_tokens"
              + " FROM usage_hourly_voided WHERE "
              + where;
      all.addAll(params);
    } else {
      String where = where(q, "", "finished_at", params);
      all = new ArrayList<>(params);
      inner =
          "SELECT finished_at AS t, api_key_id, model, device,"
              + " coalesce(session_id, request_id) AS session_id, 1 AS requests, device_ns,"
              + " prefill_ns, decode_ns, prompt_tokens, completion_tokens"
              + " FROM usage_records r WHERE "
              + where
              + " AND NOT EXISTS (SELECT 1 FROM charge_voids v WHERE v.request_id = r.request_id)";
    }
    StringBuilder groups = new StringBuilder();
    StringBuilder select = new StringBuilder();
    for (UsageGroup g : UsageGroup.values()) {
      String col = g.apiName();
      if (q.groupBy().contains(g)) {
        select.append(", ").append(col);
        groups.append(", ").append(col);
      } else {
        select.append(", NULL");
      }
    }
    String sums =
        cost
            ? ", sum(requests)::int8, sum(cost_nmicros)"
            : ", sum(requests)::int8, sum(device_ns)::int8, sum(prefill_ns)::int8,"
                + " sum(decode_ns)::int8, sum(prompt_tokens)::int8, sum(completion_tokens)::int8";
    String sql =
        "SELECT date_trunc('"
            + q.width().sqlUnit()
            + "', t, 'UTC') AS b"
            + select
            + sums
            + " FROM ("
            + inner
            + ") u GROUP BY 1"
            + groups
            + (rollup ? " HAVING sum(requests) > 0" : "")
            + " ORDER BY 1"
            + groups;
    PreparedStatement ps = c.prepareStatement(sql);
    try {
      for (int i = 0; i < all.size(); i++) {
        Object v = all.get(i);
        if (v instanceof String[] a) {
          ps.setArray(i + 1, c.createArrayOf("text", a));
        } else if (v instanceof Long[] a) {
          ps.setArray(i + 1, c.createArrayOf("int8", a));
        } else if (v instanceof Timestamp t) {
          ps.setTimestamp(i + 1, t);
        } else {
          ps.setLong(i + 1, (Long) v);
        }
      }
    } catch (SQLException | RuntimeException e) {
      ps.close();
      throw e;
    }
    return ps;
  }

  /**
   * @param alias prefix of the filtered table's columns ({@code "r."} in a join), or empty
   */
  private static String where(UsageBucketQuery q, String alias, String time, List<Object> params) {
    StringBuilder w = new StringBuilder(alias).append("account_id = ?");
    params.add(q.accountId());
    if (q.apiKeyId() != null) {
      w.append(" AND ").append(alias).append("api_key_id = ?");
      params.add(q.apiKeyId());
    }
    w.append(" AND ").append(alias).append(time).append(" >= ? AND ");
    w.append(alias).append(time).append(" < ?");
    params.add(Timestamp.from(q.start()));
    params.add(Timestamp.from(q.end()));
    if (!q.models().isEmpty()) {
      w.append(" AND ").append(alias).append("model = ANY(?)");
      params.add(q.models().toArray(String[]::new));
    }
    if (!q.apiKeyIds().isEmpty()) {
      w.append(" AND ").append(alias).append("api_key_id = ANY(?)");
      params.add(q.apiKeyIds().toArray(Long[]::new));
    }
    return w.toString();
  }
}
