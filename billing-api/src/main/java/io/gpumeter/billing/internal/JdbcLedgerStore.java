package io.gpumeter.billing.internal;

import io.gpumeter.billing.LedgerStore;
import io.gpumeter.billing.LedgerWriteException;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import java.sql.Array;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Objects;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Writes ledger batches to PostgreSQL with one statement per batch.
 *
 * <p>The statement: the batch travels as one array per column and is expanded with {@code
 * unnest} (one SQL text for every batch size, so it stays a server-side prepared statement), then
 *
 * <ol>
 *   <li>{@code INSERT INTO usage_records ... ON CONFLICT (request_id) DO NOTHING RETURNING ...}
 *       inserts the new records and returns only those;
 *   <li>a second data-modifying CTE adds exactly the returned rows, grouped by {@code
 *       (date_trunc('hour', finished_at, 'UTC'), api_key_id, model, device)}, into {@code
 *       usage_hourly} with {@code ON CONFLICT ... DO UPDATE SET x = usage_hourly.x + EXCLUDED.x}.
 * </ol>
 *
 * Both run in one statement, hence one transaction: a duplicate request id never reaches the
 * rollup, and raw rows and rollups cannot disagree.
 *
 * <p>Locks: records are sorted by request id and rollup rows by their key, so two replicas
 * writing overlapping batches take locks in the same order. A deadlock or serialization failure
 * is retried here a few times.
 *
 * <p>Time stamps are truncated to microseconds (PostgreSQL's precision) before they are sent, so
 * the hour bucket is the one Java computes from the same value.
 */
public final class JdbcLedgerStore implements LedgerStore {
  private static final Logger LOG = LoggerFactory.getLogger(JdbcLedgerStore.class);
  private static final int MAX_ATTEMPTS = 3;

  static final String SQL =
      "WITH input AS (\n"
          + "  SELECT * FROM unnest(?::text[], ?::int8[], ?::int8[], ?::text[], ?::text[],"
          + " ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::int8[],"
          + " ?::int8[], ?::int8[], ?::int4[], ?::int4[], ?::int8[], ?::int4[], ?::text[],"
          + " ?::timestamptz[], ?::timestamptz[])\n"
          + "    WITH ORDINALITY AS t(request_id, api_key_id, account_id, model, device,"
          + " device_name, device_uuid, timer_kind, driver_version, cuda_version, weight_policy,"
          + " device_ns, prefill_ns, decode_ns, prompt_tokens, completion_tokens, queue_ns, steps,"
          + " status, started_at, finished_at, ord)\n"
          + "), inserted AS (\n"
          + "  INSERT INTO usage_records (request_id, api_key_id, account_id, model, device,"
          + " device_name, device_uuid, timer_kind, driver_version, cuda_version, weight_policy,"
          + " device_ns, prefill_ns, decode_ns, prompt_tokens, completion_tokens, queue_ns, steps,"
          + " status, started_at, finished_at)\n"
          + "  SELECT request_id, api_key_id, account_id, model, device, device_name, device_uuid,"
          + " timer_kind, driver_version, cuda_version, weight_policy, device_ns, prefill_ns,"
          + " decode_ns, prompt_tokens, completion_tokens, queue_ns, steps, status, started_at,"
          + " finished_at FROM input ORDER BY ord\n"
          + "  ON CONFLICT (request_id) DO NOTHING\n"
          + "  RETURNING api_key_id, account_id, model, device, finished_at, device_ns,"
          + " prefill_ns, decode_ns, prompt_tokens, completion_tokens\n"
          + "), rolled AS (\n"
          + "  INSERT INTO usage_hourly (hour, api_key_id, account_id, model, device, requests,"
          + " device_ns, prefill_ns, decode_ns, prompt_tokens, completion_tokens)\n"
          + "  SELECT date_trunc('hour', finished_at, 'UTC') AS hour, api_key_id,"
          + " max(account_id), model, device, count(*), sum(device_ns)::int8,"
          + " sum(prefill_ns)::int8, sum(decode_ns)::int8, sum(prompt_tokens)::int8,"
          + " sum(completion_tokens)::int8\n"
          + "  FROM inserted GROUP BY api_key_id, 1, model, device\n"
          + "  ORDER BY api_key_id, 1, model, device\n"
          + "  ON CONFLICT (api_key_id, hour, model, device) DO UPDATE SET\n"
          + "    requests = usage_hourly.requests + EXCLUDED.requests,\n"
          + "    device_ns = usage_hourly.device_ns + EXCLUDED.device_ns,\n"
          + "    prefill_ns = usage_hourly.prefill_ns + EXCLUDED.prefill_ns,\n"
          + "    decode_ns = usage_hourly.decode_ns + EXCLUDED.decode_ns,\n"
          + "    prompt_tokens = usage_hourly.prompt_tokens + EXCLUDED.prompt_tokens,\n"
          + "    completion_tokens = usage_hourly.completion_tokens + EXCLUDED.completion_tokens\n"
          + "  RETURNING 1\n"
          + ")\n"
          + "SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM rolled)";

  private final DataSource dataSource;

  public JdbcLedgerStore(DataSource dataSource) {
    this.dataSource = Objects.requireNonNull(dataSource, "dataSource");
  }

  @Override
  public int write(List<UsageRecord> records) throws LedgerWriteException {
    if (records.isEmpty()) {
      return 0;
    }
    List<UsageRecord> sorted = new ArrayList<>(records);
    sorted.sort(Comparator.comparing(UsageRecord::requestId));
    for (int attempt = 1; ; attempt++) {
      try {
        return writeOnce(sorted);
      } catch (SQLException e) {
        String state = sqlState(e);
        boolean retry = state != null && (state.equals("40001") || state.equals("40P01"));
        if (retry && attempt < MAX_ATTEMPTS) {
          LOG.debug("Retrying ledger batch after {} (attempt {})", state, attempt);
          continue;
        }
        boolean recordError = state != null && (state.startsWith("22") || state.startsWith("23"));
        throw new LedgerWriteException(
            "could not store " + records.size() + " usage records (SQLState " + state + ")",
            e,
            recordError);
      } catch (RuntimeException e) {
        throw new LedgerWriteException(
            "could not store " + records.size() + " usage records", e, false);
      }
    }
  }

  private int writeOnce(List<UsageRecord> rs) throws SQLException {
    int n = rs.size();
    String[] requestId = new String[n];
    Long[] apiKeyId = new Long[n];
    Long[] accountId = new Long[n];
    String[] model = new String[n];
    String[] device = new String[n];
    String[] deviceName = new String[n];
    String[] deviceUuid = new String[n];
    String[] timerKind = new String[n];
    String[] driverVersion = new String[n];
    String[] cudaVersion = new String[n];
    String[] weightPolicy = new String[n];
    Long[] deviceNs = new Long[n];
    Long[] prefillNs = new Long[n];
    Long[] decodeNs = new Long[n];
    Integer[] promptTokens = new Integer[n];
    Integer[] completionTokens = new Integer[n];
    Long[] queueNs = new Long[n];
    Integer[] steps = new Integer[n];
    String[] status = new String[n];
    String[] startedAt = new String[n];
    String[] finishedAt = new String[n];
    for (int i = 0; i < n; i++) {
      UsageRecord r = rs.get(i);
      TimerInfo t = r.timer();
      requestId[i] = r.requestId();
      apiKeyId[i] = r.apiKeyId();
      accountId[i] = r.accountId();
      model[i] = r.model();
      device[i] = t.device();
      deviceName[i] = t.deviceName();
      deviceUuid[i] = t.deviceUuid();
      timerKind[i] = t.timerKind();
      driverVersion[i] = t.driverVersion();
      cudaVersion[i] = t.cudaVersion();
      weightPolicy[i] = r.weightPolicy();
      deviceNs[i] = r.deviceNs();
      prefillNs[i] = r.prefillNs();
      decodeNs[i] = r.decodeNs();
      promptTokens[i] = r.promptTokens();
      completionTokens[i] = r.completionTokens();
      queueNs[i] = r.queueNs();
      steps[i] = r.steps();
      status[i] = r.status().dbName();
      startedAt[i] = r.startedAt().truncatedTo(ChronoUnit.MICROS).toString();
      finishedAt[i] = r.finishedAt().truncatedTo(ChronoUnit.MICROS).toString();
    }
    try (Connection c = dataSource.getConnection()) {
      // One statement is one transaction in auto-commit mode.
      c.setAutoCommit(true);
      List<Array> arrays = new ArrayList<>(21);
      try (PreparedStatement ps = c.prepareStatement(SQL)) {
        Object[][] columns = {
          requestId, apiKeyId, accountId, model, device, deviceName, deviceUuid, timerKind,
          driverVersion, cudaVersion, weightPolicy, deviceNs, prefillNs, decodeNs, promptTokens,
          completionTokens, queueNs, steps, status, startedAt, finishedAt
        };
        for (int col = 0; col < columns.length; col++) {
          Object[] values = columns[col];
          String type =
              values instanceof Long[] ? "int8" : values instanceof Integer[] ? "int4" : "text";
          Array a = c.createArrayOf(type, values);
          arrays.add(a);
          ps.setArray(col + 1, a);
        }
        try (ResultSet result = ps.executeQuery()) {
          result.next();
          return (int) result.getLong(1);
        }
      } finally {
        for (Array a : arrays) {
          a.free();
        }
      }
    }
  }

  private static String sqlState(SQLException e) {
    for (Throwable t = e; t != null; t = t.getCause()) {
      if (t instanceof SQLException s && s.getSQLState() != null) {
        return s.getSQLState();
      }
    }
    return null;
  }
}
