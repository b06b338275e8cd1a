package io.gpumeter.billing.usage;

import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.ChargedRequest;
import io.gpumeter.billing.CostBucketRow;
import io.gpumeter.billing.CostRowSink;
import io.gpumeter.billing.HourlyUsage;
import io.gpumeter.billing.KvUsage;
import io.gpumeter.billing.StoredUsage;
import io.gpumeter.billing.UsageBucketQuery;
import io.gpumeter.billing.UsageBucketRow;
import io.gpumeter.billing.UsageReport;
import io.gpumeter.billing.UsageRowSink;
import io.gpumeter.billing.UsageTotals;
import io.gpumeter.billing.pricing.Money;
import io.gpumeter.billing.pricing.Settlement;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import java.io.IOException;
import java.math.BigInteger;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Objects;
import java.util.Optional;
import javax.sql.DataSource;

/**
 * Read side of the ledger. Reports come from the hourly rollup ({@code usage_hourly}) minus the
 * voided charges' rollup ({@code usage_hourly_voided}, DESIGN.md invariant 15), both kept for good,
 * so a report covers whole UTC hours and never includes a voided charge. Blocking JDBC: call off
 * the event loop.
 */
public final class UsageQueries {
  private static final Duration HOUR = Duration.ofHours(1);

  private final DataSource dataSource;
  private final RequestLog requestLog;
  private final Runnable readFence;

  public UsageQueries(DataSource dataSource) {
    this(dataSource, () -> {});
  }

  /**
   * Reads whose every per-key read ({@link #requests}, {@link #usage}, {@link #buckets}, {@link
   * #costBuckets}, {@link #find}, {@link #kvUsage}) first runs {@code readFence}: with a local
   * commit point it waits until the charges acknowledged before the read are in PostgreSQL, or
   * throws ({@link io.gpumeter.billing.ShippingLagException}) rather than let the read answer
   * short.
   */
  public UsageQueries(DataSource dataSource, Runnable readFence) {
    this.dataSource = Objects.requireNonNull(dataSource, "dataSource");
    this.requestLog = new RequestLog(dataSource);
    this.readFence = Objects.requireNonNull(readFence, "readFence");
  }

  /**
   * The request log: up to {@code limit} charged requests of the account (of the key {@code
   * onlyKey} alone when it is not null), newest first by {@code (finished_at, request_id)}, below
   * the request {@code before} when it is not null (the cursor of the page before). Voided charges
   * are listed with their void reason.
   *
   * @return empty when {@code before} names no request of this account (and key) that is still
   *     stored
   * @throws IllegalArgumentException if {@code limit} is not positive
   * @throws BillingException if the database fails
   */
  public Optional<List<ChargedRequest>> requests(
      long accountId, Long onlyKey, int limit, String before) {
    if (limit < 1) {
      throw new IllegalArgumentException("limit must be positive, was " + limit);
    }
    readFence.run();
    return requestLog.page(accountId, onlyKey, limit, before);
  }

  /**
   * Usage of one key in the hours that overlap {@code [from, to)}: from {@code from} rounded down
   * to the hour up to {@code to} rounded up to the hour.
   *
   * @throws IllegalArgumentException if {@code to} is before {@code from}
   * @throws BillingException if the database fails
   */
  public UsageReport usage(long apiKeyId, Instant from, Instant to) {
    readFence.run();
    Objects.requireNonNull(from, "from");
    Objects.requireNonNull(to, "to");
    if (to.isBefore(from)) {
      throw new IllegalArgumentException("to " + to + " is before from " + from);
    }
    Instant start = from.truncatedTo(ChronoUnit.HOURS);
    Instant end = to.truncatedTo(ChronoUnit.HOURS);
    if (end.isBefore(to)) {
      end = end.plus(HOUR);
    }
    List<HourlyUsage> hours = new ArrayList<>();
    UsageTotals totals = UsageTotals.ZERO;
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT hour, model, sum(requests), sum(device_ns), sum(prefill_ns),"
                    + " sum(decode_ns), sum(prompt_tokens), sum(completion_tokens) FROM ("
                    + " SELECT hour, model, requests, device_ns, prefill_ns, decode_ns,"
                    + " prompt_tokens, completion_tokens FROM usage_hourly"
                    + " WHERE api_key_id = ? AND hour >= ? AND hour < ?"
                    + " UNION ALL SELECT hour, model, -requests, -device_ns, -prefill_ns,"
                    + " -decode_ns, -prompt_tokens, -completion_tokens FROM usage_hourly_voided"
                    + " WHERE api_key_id = ? AND hour >= ? AND hour < ?) u"
                    + " GROUP BY hour, model HAVING sum(requests) > 0 ORDER BY hour, model")) {
      for (int i = 0; i < 2; i++) {
        ps.setLong(1 + 3 * i, apiKeyId);
        ps.setTimestamp(2 + 3 * i, Timestamp.from(start));
        ps.setTimestamp(3 + 3 * i, Timestamp.from(end));
      }
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          UsageTotals t =
              new UsageTotals(
                  rs.getBigDecimal(3).longValueExact(),
                  rs.getBigDecimal(4).longValueExact(),
                  rs.getBigDecimal(5).longValueExact(),
                  rs.getBigDecimal(6).longValueExact(),
                  rs.getBigDecimal(7).longValueExact(),
                  rs.getBigDecimal(8).longValueExact());
          hours.add(new HourlyUsage(rs.getTimestamp(1).toInstant(), rs.getString(2), t));
          totals = totals.plus(t);
        }
      }
    } catch (SQLException e) {
      throw new BillingException("could not read usage of API key " + apiKeyId, e);
    }
    return new UsageReport(apiKeyId, start, end, totals, hours);
  }

  /** Rows fetched from the server at a time while a bucketed query streams (a cursor). */
  static final int FETCH_SIZE = 1_000;

  /**
   * Runs a bucketed usage query and hands each result to {@code sink} as it is read, in bucket then
   * group order. The result set is read through a cursor ({@value #FETCH_SIZE} rows at a time, auto
   * commit off), so memory does not grow with the number of results. From the hourly rollup when
   * {@link UsageBucketQuery#fromRollup()}, else from the raw records (whose retention the caller
   * checks). Voided charges are excluded either way (invariant 15).
   *
   * @return the number of results handed to the sink
   * @throws IOException what the sink threw; the query is abandoned
   * @throws BillingException if the database fails
   */
  public long buckets(UsageBucketQuery query, UsageRowSink sink) throws IOException {
    Objects.requireNonNull(query, "query");
    Objects.requireNonNull(sink, "sink");
    readFence.run();
    long n = 0;
    try (Connection c = dataSource.getConnection()) {
      c.setAutoCommit(false); // the PostgreSQL driver uses a cursor only inside a transaction
      try (PreparedStatement ps = BucketSql.prepare(c, query)) {
        ps.setFetchSize(FETCH_SIZE);
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) {
            long key = rs.getLong(3);
            Long apiKeyId = rs.wasNull() ? null : key;
            UsageBucketRow row =
                new UsageBucketRow(
                    rs.getTimestamp(1).toInstant(),
                    rs.getString(2),
                    apiKeyId,
                    rs.getString(4),
                    rs.getString(5),
                    new UsageTotals(
                        rs.getLong(6),
                        rs.getLong(7),
                        rs.getLong(8),
                        rs.getLong(9),
                        rs.getLong(10),
                        rs.getLong(11)));
            sink.accept(row);
            n++;
          }
        }
        c.commit();
      } finally {
        rollbackQuietly(c);
      }
    } catch (SQLException e) {
      throw new BillingException("could not read the usage of account " + query.accountId(), e);
    }
    return n;
  }

  /**
   * Runs a bucketed cost query (same scope, buckets, groups and filters as {@link #buckets}) and
   * hands each result to {@code sink} as it is read, through a cursor. Each result's amount is the
   * sum of the stored exact costs of its priced, not voided charges ({@code charge_prices}),
   * rounded once by {@link Money#roundToMicros}: from {@code cost_hourly} (V14) when {@link
   * UsageBucketQuery#fromRollup()}, else from the raw records joined with their prices.
   *
   * @return the number of results handed to the sink
   * @throws IOException what the sink threw; the query is abandoned
   * @throws BillingException if the database fails or the account does not exist
   */
  public long costBuckets(UsageBucketQuery query, CostRowSink sink) throws IOException {
    Objects.requireNonNull(query, "query");
    Objects.requireNonNull(sink, "sink");
    readFence.run();
    long n = 0;
    try (Connection c = dataSource.getConnection()) {
      Settlement.settle(c); // the stored charges priced first (V25), in a transaction of its own
      c.setAutoCommit(false); // the PostgreSQL driver uses a cursor only inside a transaction
      try {
        String currency;
        try (PreparedStatement ps =
            c.prepareStatement("SELECT currency FROM accounts WHERE id = ?")) {
          ps.setLong(1, query.accountId());
          try (ResultSet rs = ps.executeQuery()) {
            if (!rs.next()) {
              throw new BillingException("no account " + query.accountId());
            }
            currency = rs.getString(1);
          }
        }
        try (PreparedStatement ps = BucketSql.prepareCost(c, query)) {
          ps.setFetchSize(FETCH_SIZE);
          try (ResultSet rs = ps.executeQuery()) {
            while (rs.next()) {
              long key = rs.getLong(3);
              Long apiKeyId = rs.wasNull() ? null : key;
              BigInteger exact = rs.getBigDecimal(7).toBigIntegerExact();
              sink.accept(
                  new CostBucketRow(
                      rs.getTimestamp(1).toInstant(),
                      rs.getString(2),
                      apiKeyId,
                      rs.getString(4),
                      rs.getString(5),
                      rs.getLong(6),
                      exact,
                      Money.roundToMicros(exact),
                      currency));
              n++;
            }
          }
        }
        c.commit();
      } finally {
        rollbackQuietly(c);
      }
    } catch (SQLException e) {
      throw new BillingException("could not read the costs of account " + query.accountId(), e);
    }
    return n;
  }

  private static void rollbackQuietly(Connection c) {
    try {
      if (!c.getAutoCommit()) {
        c.rollback();
        c.setAutoCommit(true);
      }
    } catch (SQLException ignored) {
      // a broken connection; the pool evicts it
    }
  }

  /** The stored batch company sum, {@link UsageRecord#NOT_MEASURED} for NULL. */
  private static long batchCompany(ResultSet rs) throws SQLException {
    long v = rs.getLong("batch_company_sum");
    return rs.wasNull() ? UsageRecord.NOT_MEASURED : v;
  }

  /**
   * The stored record with this request id, if any.
   *
   * @throws BillingException if the database fails
   */
  public Optional<StoredUsage> find(String requestId) {
    readFence.run();
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT request_id, api_key_id, account_id, model, device, device_name,"
                    + " device_uuid, timer_kind, driver_version, cuda_version, weight_policy,"
                    + " device_ns, prefill_ns, decode_ns, prompt_tokens, completion_tokens,"
                    + " queue_ns, steps, status, started_at, finished_at, recorded_at,"
                    + " kv_byte_ns, peak_kv_bytes, coalesce(session_id, request_id) AS session_id,"
                    + " batch_company_sum FROM usage_records WHERE request_id = ?")) {
      ps.setString(1, requestId);
      try (ResultSet rs = ps.executeQuery()) {
        if (!rs.next()) {
          return Optional.empty();
        }
        TimerInfo timer =
            new TimerInfo(
                rs.getString("timer_kind"),
                rs.getString("device"),
                rs.getString("device_name"),
                rs.getString("device_uuid"),
                rs.getString("driver_version"),
                rs.getString("cuda_version"));
        UsageRecord r =
            new UsageRecord(
                rs.getString("request_id"),
                rs.getLong("api_key_id"),
                rs.getLong("account_id"),
                rs.getString("model"),
                timer,
                rs.getString("weight_policy"),
                rs.getLong("device_ns"),
                rs.getLong("prefill_ns"),
                rs.getLong("decode_ns"),
                rs.getInt("prompt_tokens"),
                rs.getInt("completion_tokens"),
                rs.getLong("queue_ns"),
                rs.getInt("steps"),
                UsageStatus.valueOf(rs.getString("status").toUpperCase(Locale.ROOT)),
                rs.getTimestamp("started_at").toInstant(),
                rs.getTimestamp("finished_at").toInstant(),
                rs.getString("session_id"),
                rs.getLong("kv_byte_ns"),
                rs.getLong("peak_kv_bytes"),
                batchCompany(rs));
        return Optional.of(new StoredUsage(r, rs.getTimestamp("recorded_at").toInstant()));
      }
    } catch (SQLException e) {
      throw new BillingException("could not read usage record " + requestId, e);
    }
  }

  /**
   * KV memory-time of one key's requests per hour and model, over the same whole hours (and the
   * same hours present) as {@link #usage}, excluding voided charges: from the hourly rollup (V22:
   * {@code usage_hourly} minus {@code usage_hourly_voided} for the byte-nanoseconds; the peak is
   * kept net of voids in {@code usage_hourly}), so it is kept for good like the rest of the report.
   * Records stored before migration V10 count 0, as do hours whose records retention had dropped
   * before V22 filled the rollup.
   *
   * @throws BillingException if the database fails
   */
  public List<KvUsage> kvUsage(long apiKeyId, Instant from, Instant to) {
    readFence.run();
    Instant start = from.truncatedTo(ChronoUnit.HOURS);
    Instant end = to.truncatedTo(ChronoUnit.HOURS);
    if (end.isBefore(to)) {
      end = end.plus(HOUR);
    }
    List<KvUsage> out = new ArrayList<>();
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT hour, model, sum(kv), max(peak) FROM ("
                    + " SELECT hour, model, requests, kv_byte_ns AS kv, peak_kv_bytes AS peak"
                    + " FROM usage_hourly WHERE api_key_id = ? AND hour >= ? AND hour < ?"
                    + " UNION ALL SELECT hour, model, -requests, -kv_byte_ns, 0"
                    + " FROM usage_hourly_voided WHERE api_key_id = ? AND hour >= ? AND hour < ?)"
                    + " u GROUP BY hour, model HAVING sum(requests) > 0 ORDER BY hour, model")) {
      for (int i = 0; i < 2; i++) {
        ps.setLong(1 + 3 * i, apiKeyId);
        ps.setTimestamp(2 + 3 * i, Timestamp.from(start));
        ps.setTimestamp(3 + 3 * i, Timestamp.from(end));
      }
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          out.add(
              new KvUsage(
                  rs.getTimestamp(1).toInstant(),
                  rs.getString(2),
                  rs.getBigDecimal(3).toBigIntegerExact(),
                  rs.getLong(4)));
        }
      }
    } catch (SQLException e) {
      throw new BillingException("could not read KV usage of API key " + apiKeyId, e);
    }
    return out;
  }

  /**
   * How many rows carry this request id: 0 or 1, since the ledger is idempotent (for tests and
   * audits).
   *
   * @throws BillingException if the database fails
   */
  public long countForRequest(String requestId) {
    return countRows(requestId);
  }

  /**
   * The reason this request's charge was voided ({@code charge_voids.reason}), if it was.
   *
   * @throws BillingException if the database fails
   */
  public Optional<String> voidReason(String requestId) {
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT reason FROM charge_voids WHERE request_id = ?")) {
      ps.setString(1, requestId);
      try (ResultSet rs = ps.executeQuery()) {
        return rs.next() ? Optional.of(rs.getString(1)) : Optional.empty();
      }
    } catch (SQLException e) {
      throw new BillingException("could not read the void of " + requestId, e);
    }
  }

  private long countRows(String requestId) {
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT count(*) FROM usage_records WHERE request_id = ?")) {
      ps.setString(1, requestId);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    } catch (SQLException e) {
      throw new BillingException("could not count usage record " + requestId, e);
    }
  }
}
