package io.gpumeter.billing.ledger;

import io.gpumeter.billing.MeasuredDelta;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import java.nio.charset.StandardCharsets;
import java.sql.Array;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.List;
import java.util.Objects;
import java.util.Set;
import java.util.WeakHashMap;
import javax.sql.DataSource;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyIn;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Writes ledger batches to PostgreSQL: one transaction per batch.
 *
 * <p>The statement (the same for both {@link Method}s, which differ only in how the batch reaches
 * the server):
 *
 * <ol>
 *   <li>{@code input}: the batch, one row per request id (duplicates within the batch are dropped
 *       in Java, the first occurrence wins), sorted by request id ({@code ord});
 *   <li>{@code claimed}: {@code INSERT INTO usage_request_ids ... ON CONFLICT (request_id) DO
 *       NOTHING RETURNING request_id} claims the ids not seen before. The claim table is not
 *       partitioned, so its primary key is the request id alone: this is what makes the ledger
 *       idempotent across the monthly partitions of {@code usage_records};
 *   <li>{@code inserted}: the claimed records go into {@code usage_records} (partitioned by {@code
 *       finished_at}). A plain insert: a claim exists for every raw row (same transaction; claims
 *       are pruned only after their rows are dropped), so a conflict there would be a broken
 *       invariant and fails loudly (23505) instead of being skipped;
 *   <li>{@code rolled}: exactly the inserted rows, grouped by {@code (date_trunc('hour',
 *       finished_at, 'UTC'), api_key_id, model, device)}, are added into {@code usage_hourly}: sums
 *       of the counters and of the KV byte-nanoseconds, the largest peak KV bytes (V22; a void
 *       applied later subtracts its KV memory-time through {@code usage_hourly_voided} and
 *       recomputes the bucket's peak without it: trigger {@code charge_voids_kv_rollup}).
 * </ol>
 *
 * All in one transaction: a duplicate request id never reaches the raw table or the rollup, and raw
 * rows and rollups cannot disagree.
 *
 * <p>The measured side of a batch ({@link MeasuredBatch}) is committed with it. With {@link
 * Method#UNNEST} it is part of the same statement ({@link #UNNEST_MEASURED_SQL}), run in
 * auto-commit mode: the batch costs one round trip to the server, its commit included, where a
 * transaction of two statements and a {@code COMMIT} cost three (issue 9: the commit is what a
 * durable response waits for). A batch of no records writes the measured side alone ({@link
 * #MEASURED_SQL}).
 *
 * <p>{@link Method#UNNEST}: one statement, the batch bound as one array per column and expanded
 * with {@code unnest} (one SQL text for every batch size, so it stays a server-side prepared
 * statement). {@link Method#COPY}: the batch is streamed with {@code COPY ... FROM STDIN} (text
 * format) into a session-local temporary staging table ({@code ON COMMIT DELETE ROWS}, created once
 * per physical connection), then the statement reads the staging table; both in one transaction.
 * UNNEST is the default: at batches of 1000 both cost the same server CPU per record (the index and
 * rollup work dominates), and at the small batches a lightly loaded writer sends (10-100 records)
 * COPY's extra round trips and transaction cost 1.2-2x more per record (see benchmarks/RESULTS.md,
 * "Ledger throughput and publish latency").
 *
 * <p>Locks: records are sorted by request id and rollup rows by their key, so two replicas writing
 * overlapping batches take locks in the same order. A deadlock or serialization failure is retried
 * here a few times.
 *
 * <p>Time stamps are truncated to microseconds (PostgreSQL's precision) before they are sent, so
 * the hour bucket is the one Java computes from the same value.
 */
public final class JdbcLedgerStore implements LedgerStore {
  private static final Logger LOG = LoggerFactory.getLogger(JdbcLedgerStore.class);
  private static final int MAX_ATTEMPTS = 3;

  /** How a batch travels to the server. */
  public enum Method {
    /** One statement with one bound array per column. */
    UNNEST,
    /** COPY into a temporary staging table, then one statement; one transaction. */
    COPY
  }

  private static final String COLUMNS =
      "request_id, api_key_id, account_id, model, device, device_name, device_uuid, timer_kind,"
          + " driver_version, cuda_version, weight_policy, device_ns, prefill_ns, decode_ns,"
          + " prompt_tokens, completion_tokens, queue_ns, steps, status, started_at, finished_at,"
          + " kv_byte_ns, peak_kv_bytes, session_id, batch_company_sum";

  /** The record CTEs after {@code input}: {@code claimed}, {@code inserted}, {@code rolled}. */
  private static final String RECORD_CTES =
      "), claimed AS (\n"
          + "  INSERT INTO usage_request_ids (request_id, finished_at)\n"
          + "  SELECT request_id, finished_at FROM input ORDER BY ord\n"
          + "  ON CONFLICT (request_id) DO NOTHING\n"
          + "  RETURNING request_id\n"
          + "), inserted AS (\n"
          + "  INSERT INTO usage_records ("
          + COLUMNS
          + ", replica)\n"
          + "  SELECT "
          + COLUMNS
          + ", ?::uuid FROM input JOIN claimed USING (request_id)\n"
          + "  RETURNING api_key_id, account_id, model, device, finished_at, device_ns,"
          + " prefill_ns, decode_ns, prompt_tokens, completion_tokens, kv_byte_ns,"
          + " peak_kv_bytes\n"
          + "), rolled AS (\n"
          + "  INSERT INTO usage_hourly (hour, api_key_id, account_id, model, device, requests,"
          + " device_ns, prefill_ns, decode_ns, prompt_tokens, completion_tokens, kv_byte_ns,"
          + " peak_kv_bytes)\n"
          + "  SELECT date_trunc('hour', finished_at, 'UTC') AS hour, api_key_id,"
          + " max(account_id), model, device, count(*), sum(device_ns)::int8,"
          + " sum(prefill_ns)::int8, sum(decode_ns)::int8, sum(prompt_tokens)::int8,"
          + " sum(completion_tokens)::int8, sum(kv_byte_ns), max(peak_kv_bytes)\n"
          + "  FROM inserted GROUP BY api_key_id, 1, model, device\n"
          + "  ORDER BY api_key_id, 1, model, device\n"
          + "  ON CONFLICT (api_key_id, hour, model, device) DO UPDATE SET\n"
          + "    requests = usage_hourly.requests + EXCLUDED.requests,\n"
          + "    device_ns = usage_hourly.device_ns + EXCLUDED.device_ns,\n"
          + "    prefill_ns = usage_hourly.prefill_ns + EXCLUDED.prefill_ns,\n"
          + "    decode_ns = usage_hourly.decode_ns + EXCLUDED.decode_ns,\n"
          + "    prompt_tokens = usage_hourly.prompt_tokens + EXCLUDED.prompt_tokens,\n"
          + "    completion_tokens = usage_hourly.completion_tokens + EXCLUDED.completion_tokens,\n"
          + "    kv_byte_ns = usage_hourly.kv_byte_ns + EXCLUDED.kv_byte_ns,\n"
          + "    peak_kv_bytes = greatest(usage_hourly.peak_kv_bytes, EXCLUDED.peak_kv_bytes)\n"
          + "  RETURNING 1\n"
          + ")";

  private static final String WRITE_TAIL =
      RECORD_CTES + "\nSELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM rolled)";

  /** {@code input}: the batch bound as one array per column; parameters 1 to 24. */
  private static final String UNNEST_INPUT =
      "WITH input AS (\n"
          + "  SELECT * FROM unnest(?::text[], ?::int8[], ?::int8[],"
          + " ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[],"
          + " ?::text[], ?::int8[], ?::int8[], ?::int8[], ?::int4[], ?::int4[], ?::int8[],"
          + " ?::int4[], ?::text[], ?::timestamptz[], ?::timestamptz[], ?::int8[], ?::int8[], ?::text[],"
          + " ?::int8[])\n"
          + "    WITH ORDINALITY AS t("
          + COLUMNS
          + ", ord)\n";

  static final String UNNEST_SQL = UNNEST_INPUT + WRITE_TAIL;

  /**
   * Parameters of {@link #UNNEST_INPUT} (one array per column) and of {@link #RECORD_CTES} (the
   * replica, bound last).
   */
  private static final int RECORD_PARAMETERS = 26;

  /**
   * The measured side of a batch ({@link MeasuredBatch}): claims the batch id, and only if the
   * claim is new adds the deltas into {@code device_time_minutely} and the accrual into {@code
   * ledger_accrual}. Run in the same transaction as the batch's records.
   */
  private static final String MEASURED_CTES =
      "claim AS (\n"
          + "  INSERT INTO measured_batches (batch_id, instance_id) VALUES (?::uuid, ?::uuid)\n"
          + "  ON CONFLICT (batch_id) DO NOTHING RETURNING 1\n"
          + "), minutes AS (\n"
          + "  INSERT INTO device_time_minutely (minute, model, device, replica, measured_ns,"
          + " charged_ns, system_ns, steps)\n"
          + "  SELECT to_timestamp(m * 60), model, device, ?::uuid, measured, charged, system,"
          + " steps\n"
          + "  FROM unnest(?::int8[], ?::text[], ?::text[], ?::int8[], ?::int8[], ?::int8[],"
          + " ?::int8[]) AS t(m, model, device, measured, charged, system, steps)\n"
          + "  WHERE EXISTS (SELECT 1 FROM claim)\n"
          + "  ORDER BY 1, 2, 3\n"
          + "  ON CONFLICT (minute, model, device, replica) DO UPDATE SET\n"
          + "    measured_ns = device_time_minutely.measured_ns + EXCLUDED.measured_ns,\n"
          + "    charged_ns = device_time_minutely.charged_ns + EXCLUDED.charged_ns,\n"
          + "    system_ns = device_time_minutely.system_ns + EXCLUDED.system_ns,\n"
          + "    steps = device_time_minutely.steps + EXCLUDED.steps\n"
          + "  RETURNING 1\n"
          + "), accrued AS (\n"
          + "  INSERT INTO ledger_accrual (owner_id, instance_id, model, device, accrued_ns,"
          + " recorded_ns, last_minute)\n"
          + "  SELECT ?::uuid, ?::uuid, model, device, accrued, recorded, to_timestamp(lm * 60)\n"
          + "  FROM unnest(?::text[], ?::text[], ?::int8[], ?::int8[], ?::int8[])"
          + " AS a(model, device, accrued, recorded, lm)\n"
          + "  WHERE EXISTS (SELECT 1 FROM claim)\n"
          + "  ON CONFLICT (instance_id, model, device) DO UPDATE SET\n"
          + "    accrued_ns = ledger_accrual.accrued_ns + EXCLUDED.accrued_ns,\n"
          + "    recorded_ns = ledger_accrual.recorded_ns + EXCLUDED.recorded_ns,\n"
          + "    last_minute = greatest(ledger_accrual.last_minute, EXCLUDED.last_minute)\n"
          + "  RETURNING 1\n"
          + ")";

  static final String MEASURED_SQL =
      "WITH "
          + MEASURED_CTES
          + "\nSELECT (SELECT count(*) FROM claim), (SELECT count(*) FROM minutes),"
          + " (SELECT count(*) FROM accrued)";

  /**
   * A batch's records and its measured side in ONE statement, so one auto-commit round trip makes
   * both durable together (issue 9: the commit used to be two statements and a {@code COMMIT},
   * three round trips, each one a wake-up of the backend and of the writer). Data-modifying CTEs of
   * one statement all run exactly once and commit or fail together, so this is the same transaction
   * as before; the measured CTEs touch only {@code measured_batches}, {@code device_time_minutely}
   * and {@code ledger_accrual}, which no trigger of the record CTEs writes. Parameters 1 to 24 are
   * the records ({@link #UNNEST_INPUT}), 25 to 38 the measured side.
   */
  static final String UNNEST_MEASURED_SQL =
      UNNEST_INPUT
          + RECORD_CTES
          + ", "
          + MEASURED_CTES
          + "\nSELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM rolled),"
          + " (SELECT count(*) FROM claim)";

  static final String STAGE_TABLE = "gpumeter_ledger_stage";

  static final String CREATE_STAGE =
      "CREATE TEMPORARY TABLE IF NOT EXISTS "
          + STAGE_TABLE
          + " (ord bigint, request_id text, api_key_id int8, account_id int8, model text,"
          + " device text, device_name text, device_uuid text, timer_kind text,"
          + " driver_version text, cuda_version text, weight_policy text, device_ns int8,"
          + " prefill_ns int8, decode_ns int8, prompt_tokens int4, completion_tokens int4,"
          + " queue_ns int8, steps int4, status text, started_at timestamptz,"
          + " finished_at timestamptz, kv_byte_ns int8, peak_kv_bytes int8, session_id text,"
          + " batch_company_sum int8) ON COMMIT DELETE ROWS";

  static final String COPY_SQL = "COPY " + STAGE_TABLE + " (ord, " + COLUMNS + ") FROM STDIN";

  static final String COPY_WRITE_SQL =
      "WITH input AS (\n" + "  SELECT * FROM " + STAGE_TABLE + "\n" + WRITE_TAIL;

  private final DataSource dataSource;
  private final Method method;

  /** The outbox owner id stamped on every record ({@code usage_records.replica}); may be null. */
  private final String replica;

  /**
   * Physical connections that already have the staging table (temporary tables are per session).
   */
  private final Set<PGConnection> staged = Collections.newSetFromMap(new WeakHashMap<>());

  /** A store using {@link Method#UNNEST} that records no replica (tools and benchmarks). */
  public JdbcLedgerStore(DataSource dataSource) {
    this(dataSource, Method.UNNEST);
  }

  /** A store that records no replica ({@code usage_records.replica} NULL). */
  public JdbcLedgerStore(DataSource dataSource, Method method) {
    this(dataSource, method, null);
  }

  /**
   * A store whose records carry {@code replica} (the outbox owner id of the ledger writing them, so
   * reconciliation can report drift per replica; null: not recorded). A batch written with a
   * measured side is stamped with that side's {@link MeasuredBatch#ownerId()} instead, records and
   * measured time alike.
   */
  public JdbcLedgerStore(DataSource dataSource, Method method, java.util.UUID replica) {
    this.dataSource = Objects.requireNonNull(dataSource, "dataSource");
    this.method = Objects.requireNonNull(method, "method");
    this.replica = replica == null ? null : replica.toString();
  }

  public Method method() {
    return method;
  }

  @Override
  public int write(List<UsageRecord> records) throws LedgerWriteException {
    return write(records, null);
  }

  @Override
  public int write(List<UsageRecord> records, MeasuredBatch measured) throws LedgerWriteException {
    if (records.isEmpty() && measured == null) {
      return 0;
    }
    List<UsageRecord> sorted = sortedUnique(records);
    for (int attempt = 1; ; attempt++) {
      try {
        return method == Method.COPY ? writeCopy(sorted, measured) : writeUnnest(sorted, measured);
      } catch (SQLException e) {
        String state = sqlState(e);
        boolean retry = state != null && (state.equals("40001") || state.equals("40P01"));
        if (retry && attempt < MAX_ATTEMPTS) {
          LOG.debug("Retrying ledger batch after {} (attempt {})", state, attempt);
          continue;
        }
        throw new LedgerWriteException(
            "could not store " + records.size() + " usage records (SQLState " + state + ")",
            e,
            isRecordError(state));
      } catch (RuntimeException e) {
        throw new LedgerWriteException(
            "could not store " + records.size() + " usage records", e, false);
      }
    }
  }

  /** Sorted by request id (stable), duplicates dropped: the first occurrence of an id wins. */
  static List<UsageRecord> sortedUnique(List<UsageRecord> records) {
    List<UsageRecord> sorted = new ArrayList<>(records);
    sorted.sort(Comparator.comparing(UsageRecord::requestId));
    int w = 0;
    for (int i = 0; i < sorted.size(); i++) {
      if (w == 0 || !sorted.get(i).requestId().equals(sorted.get(w - 1).requestId())) {
        sorted.set(w++, sorted.get(i));
      }
    }
    return w == sorted.size() ? sorted : sorted.subList(0, w);
  }

  /**
   * Checks that the database answers ({@code SELECT 1}).
   *
   * @throws SQLException if it does not
   */
  public void ping() throws SQLException {
    try (Connection c = dataSource.getConnection();
        Statement s = c.createStatement();
        ResultSet rs = s.executeQuery("SELECT 1")) {
      rs.next();
    }
  }

  /** SQLState class 22 (data exception) or 23 (integrity constraint violation). */
  static boolean isRecordError(String state) {
    return state != null && (state.startsWith("22") || state.startsWith("23"));
  }

  private int writeCopy(List<UsageRecord> rs, MeasuredBatch measured) throws SQLException {
    if (rs.isEmpty()) {
      return writeUnnest(rs, measured);
    }
    byte[] rows = copyRows(rs);
    try (Connection c = dataSource.getConnection()) {
      PGConnection pg = c.unwrap(PGConnection.class);
      boolean hasStage;
      synchronized (staged) {
        hasStage = staged.contains(pg);
      }
      if (!hasStage) {
        try (Statement s = c.createStatement()) {
          c.setAutoCommit(true);
          s.execute(CREATE_STAGE);
        }
        synchronized (staged) {
          staged.add(pg);
        }
      }
      return inTransaction(
          c,
          () -> {
            CopyIn in = pg.getCopyAPI().copyIn(COPY_SQL);
            try {
              in.writeToCopy(rows, 0, rows.length);
              in.endCopy();
            } finally {
              if (in.isActive()) {
                in.cancelCopy();
              }
            }
            int inserted;
            try (PreparedStatement ps = c.prepareStatement(COPY_WRITE_SQL)) {
              ps.setString(1, replicaOf(measured));
              try (ResultSet result = ps.executeQuery()) {
                result.next();
                inserted = (int) result.getLong(1);
              }
            }
            if (measured != null) {
              writeMeasured(c, measured);
            }
            return inserted;
          });
    }
  }

  /** Work of one transaction on a connection. */
  @FunctionalInterface
  private interface SqlWork<T> {
    T run() throws SQLException;
  }

  /**
   * Runs {@code work} as one transaction on {@code c}: commits if it returns, rolls back if it
   * throws, and leaves the connection in auto-commit mode either way.
   */
  private static <T> T inTransaction(Connection c, SqlWork<T> work) throws SQLException {
    c.setAutoCommit(false);
    try {
      T result = work.run();
      c.commit();
      return result;
    } catch (SQLException | RuntimeException e) {
      rollbackQuietly(c);
      throw e;
    } finally {
      try {
        c.setAutoCommit(true);
      } catch (SQLException ignored) {
        // a broken connection; the pool evicts it
      }
    }
  }

  private static void rollbackQuietly(Connection c) {
    try {
      c.rollback();
    } catch (SQLException ignored) {
      // the connection is broken; the pool evicts it and the transaction is gone with it
    }
  }

  /** The batch in COPY's text format: tab-separated columns, no nulls, one line per record. */
  static byte[] copyRows(List<UsageRecord> rs) {
    StringBuilder sb = new StringBuilder(rs.size() * 256);
    int ord = 0;
    for (UsageRecord r : rs) {
      TimerInfo t = r.timer();
      sb.append(++ord).append('\t');
      text(sb, r.requestId()).append('\t');
      sb.append(r.apiKeyId()).append('\t').append(r.accountId()).append('\t');
      text(sb, r.model()).append('\t');
      text(sb, t.device()).append('\t');
      text(sb, t.deviceName()).append('\t');
      text(sb, t.deviceUuid()).append('\t');
      text(sb, t.timerKind()).append('\t');
      text(sb, t.driverVersion()).append('\t');
      text(sb, t.cudaVersion()).append('\t');
      text(sb, r.weightPolicy()).append('\t');
      sb.append(r.deviceNs()).append('\t').append(r.prefillNs()).append('\t');
      sb.append(r.decodeNs()).append('\t').append(r.promptTokens()).append('\t');
      sb.append(r.completionTokens()).append('\t').append(r.queueNs()).append('\t');
      sb.append(r.steps()).append('\t');
      sb.append(r.status().dbName()).append('\t');
      sb.append(micros(r.startedAt())).append('\t');
      sb.append(micros(r.finishedAt())).append('\t');
      sb.append(r.kvByteNs()).append('\t').append(r.peakKvBytes()).append('\t');
      text(sb, r.sessionId()).append('\t');
      // COPY's text format writes NULL as \N: a record whose batches were not measured
      if (r.batchCompanySum() == UsageRecord.NOT_MEASURED) {
        sb.append("\\N\n");
      } else {
        sb.append(r.batchCompanySum()).append('\n');
      }
    }
    return sb.toString().getBytes(StandardCharsets.UTF_8);
  }

  /** Escapes a value for COPY's text format (backslash, tab, newline, carriage return). */
  private static StringBuilder text(StringBuilder sb, String s) {
    for (int i = 0; i < s.length(); i++) {
      char ch = s.charAt(i);
      switch (ch) {
        case '\\' -> sb.append("\\\\");
        case '\t' -> sb.append("\\t");
        case '\n' -> sb.append("\\n");
        case '\r' -> sb.append("\\r");
        default -> sb.append(ch);
      }
    }
    return sb;
  }

  private static String micros(Instant t) {
    return t.truncatedTo(ChronoUnit.MICROS).toString();
  }

  /**
   * One statement in auto-commit mode, so one round trip and one transaction: the records alone
   * ({@link #UNNEST_SQL}), the measured side alone ({@link #MEASURED_SQL}, a batch of no records),
   * or both ({@link #UNNEST_MEASURED_SQL}).
   */
  private int writeUnnest(List<UsageRecord> rs, MeasuredBatch measured) throws SQLException {
    try (Connection c = dataSource.getConnection()) {
      c.setAutoCommit(true);
      if (measured == null) {
        return executeUnnest(c, rs, UNNEST_SQL, null);
      }
      if (rs.isEmpty()) {
        writeMeasured(c, measured);
        return 0;
      }
      return executeUnnest(c, rs, UNNEST_MEASURED_SQL, measured);
    }
  }

  /**
   * The replica stamped on a batch's records: the owner of its measured side (records and measured
   * time of one batch always come from one replica), else this store's.
   */
  private String replicaOf(MeasuredBatch measured) {
    return measured != null ? measured.ownerId().toString() : replica;
  }

  /** Adds the measured side of a batch on {@code c}, inside the caller's transaction. */
  static void writeMeasured(Connection c, MeasuredBatch b) throws SQLException {
    List<Array> arrays = new ArrayList<>(12);
    try (PreparedStatement ps = c.prepareStatement(MEASURED_SQL)) {
      bindMeasured(c, ps, 0, b, arrays);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
      }
    } finally {
      freeAll(arrays);
    }
  }

  /** Binds the measured side's 17 parameters after the first {@code offset}. */
  private static void bindMeasured(
      Connection c, PreparedStatement ps, int offset, MeasuredBatch b, List<Array> arrays)
      throws SQLException {
    int n = b.deltas().size();
    Long[] minute = new Long[n];
    String[] model = new String[n];
    String[] device = new String[n];
    Long[] measuredNs = new Long[n];
    Long[] charged = new Long[n];
    Long[] system = new Long[n];
    Long[] steps = new Long[n];
    for (int i = 0; i < n; i++) {
      MeasuredDelta d = b.deltas().get(i);
      minute[i] = d.minute();
      model[i] = d.model();
      device[i] = d.device();
      measuredNs[i] = d.measuredNs();
      charged[i] = d.chargedNs();
      system[i] = d.systemNs();
      steps[i] = d.steps();
    }
    int m = b.accruals().size();
    String[] aModel = new String[m];
    String[] aDevice = new String[m];
    Long[] accrued = new Long[m];
    Long[] recorded = new Long[m];
    Long[] lastMinute = new Long[m];
    for (int i = 0; i < m; i++) {
      MeasuredBatch.Accrual a = b.accruals().get(i);
      aModel[i] = a.model();
      aDevice[i] = a.device();
      accrued[i] = a.accruedNs();
      recorded[i] = a.recordedNs();
      lastMinute[i] = a.lastMinute();
    }
    ps.setString(offset + 1, b.batchId().toString());
    ps.setString(offset + 2, b.instanceId().toString());
    ps.setString(offset + 3, b.ownerId().toString());
    Object[][] deltaColumns = {minute, model, device, measuredNs, charged, system, steps};
    for (int i = 0; i < deltaColumns.length; i++) {
      ps.setArray(offset + 4 + i, array(c, deltaColumns[i], arrays));
    }
    ps.setString(offset + 11, b.ownerId().toString());
    ps.setString(offset + 12, b.instanceId().toString());
    Object[][] accrualColumns = {aModel, aDevice, accrued, recorded, lastMinute};
    for (int i = 0; i < accrualColumns.length; i++) {
      ps.setArray(offset + 13 + i, array(c, accrualColumns[i], arrays));
    }
  }

  /** A SQL array of {@code values} (int8, int4 or text by their Java type), kept to be freed. */
  private static Array array(Connection c, Object[] values, List<Array> arrays)
      throws SQLException {
    String type = values instanceof Long[] ? "int8" : values instanceof Integer[] ? "int4" : "text";
    Array a = c.createArrayOf(type, values);
    arrays.add(a);
    return a;
  }

  private static void freeAll(List<Array> arrays) {
    for (Array a : arrays) {
      try {
        a.free();
      } catch (SQLException ignored) {
        // pgjdbc's arrays hold no server resources; nothing to release
      }
    }
  }

  /**
   * Settles the accrual of this outbox owner's earlier processes (crashed or stopped): for each
   * (instance, model, device) not yet settled, the step time it handed out as shares but never
   * recorded in a stored usage record ({@code accrued_ns - recorded_ns}) is moved, in {@code
   * device_time_minutely}, from {@code charged_ns} to {@code unbilled_ns}, starting at the
   * instance's last minute and going back while that minute's charged time lasts; each move is
   * audited in {@code unbilled_time} with reason {@code crash}, and the accrual row is marked
   * settled. Call only while holding the owner's outbox (so its earlier processes are dead) and
   * after that outbox was replayed empty (so all their batches are in). One transaction.
   *
   * @return nanoseconds moved to unbilled
   * @throws SQLException if the database fails (nothing is settled)
   */
  public long settleEarlierInstances(java.util.UUID ownerId, java.util.UUID self)
      throws SQLException {
    try (Connection c = dataSource.getConnection()) {
      return inTransaction(c, () -> settle(c, ownerId.toString(), self.toString()));
    }
  }

  private record Open(
      String owner, String instance, String model, String device, long outstanding, Instant last) {}

  /** {@code device_time_minutely.replica} of rows measured before V23. */
  static final String UNKNOWN_REPLICA = "00000000-0000-0000-0000-000000000000";

  private static long settle(Connection c, String owner, String self) throws SQLException {
    List<Open> open = new ArrayList<>();
    try (PreparedStatement ps =
        c.prepareStatement(
            "SELECT instance_id::text, model, device, accrued_ns - recorded_ns, last_minute"
                + " FROM ledger_accrual WHERE owner_id = ?::uuid AND instance_id <> ?::uuid"
                + " AND settled_at IS NULL ORDER BY instance_id, model, device FOR UPDATE")) {
      ps.setString(1, owner);
      ps.setString(2, self);
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          open.add(
              new Open(
                  owner,
                  rs.getString(1),
                  rs.getString(2),
                  rs.getString(3),
                  rs.getLong(4),
                  rs.getTimestamp(5).toInstant()));
        }
      }
    }
    long total = 0;
    for (Open o : open) {
      long moved = 0;
      if (o.outstanding() < 0) {
        LOG.warn(
            "Instance {} recorded {} ns more than it accrued for {} on {}; nothing to settle",
            o.instance(),
            -o.outstanding(),
            o.model(),
            o.device());
      } else if (o.outstanding() > 0) {
        moved = moveToUnbilled(c, o);
        if (moved < o.outstanding()) {
          LOG.warn(
              "Instance {}: {} ns accrued but never recorded for {} on {}, only {} ns of charged"
                  + " time found to mark unbilled",
              o.instance(),
              o.outstanding(),
              o.model(),
              o.device(),
              moved);
        }
      }
      try (PreparedStatement ps =
          c.prepareStatement(
              "UPDATE ledger_accrual SET settled_at = now(), unbilled_ns = ?"
                  + " WHERE instance_id = ?::uuid AND model = ? AND device = ?")) {
        ps.setLong(1, moved);
        ps.setString(2, o.instance());
        ps.setString(3, o.model());
        ps.setString(4, o.device());
        ps.executeUpdate();
      }
      total += moved;
    }
    return total;
  }

  private static long moveToUnbilled(Connection c, Open o) throws SQLException {
    List<Instant> minutes = new ArrayList<>();
    List<String> replicas = new ArrayList<>();
    List<Long> charged = new ArrayList<>();
    // The owner's own minutes (V23), latest first; then minutes measured before V23 (nil
    // replica), where the owner's earlier time may lie. Never another replica's minutes.
    try (PreparedStatement ps =
        c.prepareStatement(
            "SELECT minute, replica::text, charged_ns FROM device_time_minutely"
                + " WHERE model = ? AND device = ? AND replica IN (?::uuid, ?::uuid)"
                + " AND minute <= ? AND charged_ns > 0"
                + " ORDER BY replica = ?::uuid DESC, minute DESC FOR UPDATE")) {
      ps.setString(1, o.model());
      ps.setString(2, o.device());
      ps.setString(3, o.owner());
      ps.setString(4, UNKNOWN_REPLICA);
      ps.setTimestamp(5, java.sql.Timestamp.from(o.last()));
      ps.setString(6, o.owner());
      ps.setFetchSize(64);
      try (ResultSet rs = ps.executeQuery()) {
        long sum = 0;
        while (rs.next() && sum < o.outstanding()) {
          minutes.add(rs.getTimestamp(1).toInstant());
          replicas.add(rs.getString(2));
          charged.add(rs.getLong(3));
          sum += rs.getLong(3);
        }
      }
    }
    long left = o.outstanding();
    for (int i = 0; i < minutes.size() && left > 0; i++) {
      long take = Math.min(left, charged.get(i));
      java.sql.Timestamp minute = java.sql.Timestamp.from(minutes.get(i));
      try (PreparedStatement ps =
          c.prepareStatement(
              "UPDATE device_time_minutely SET charged_ns = charged_ns - ?,"
                  + " unbilled_ns = unbilled_ns + ? WHERE minute = ? AND model = ? AND device = ?"
                  + " AND replica = ?::uuid")) {
        ps.setLong(1, take);
        ps.setLong(2, take);
        ps.setTimestamp(3, minute);
        ps.setString(4, o.model());
        ps.setString(5, o.device());
        ps.setString(6, replicas.get(i));
        ps.executeUpdate();
      }
      try (PreparedStatement ps =
          c.prepareStatement(
              "INSERT INTO unbilled_time (instance_id, model, device, minute, unbilled_ns, reason)"
                  + " VALUES (?::uuid, ?, ?, ?, ?, 'crash')")) {
        ps.setString(1, o.instance());
        ps.setString(2, o.model());
        ps.setString(3, o.device());
        ps.setTimestamp(4, minute);
        ps.setLong(5, take);
        ps.executeUpdate();
      }
      left -= take;
    }
    return o.outstanding() - left;
  }

  /**
   * Runs {@code sql} ({@link #UNNEST_SQL}, or {@link #UNNEST_MEASURED_SQL} with {@code measured})
   * with the records bound as parameters 1 to 24; returns the records inserted.
   */
  private int executeUnnest(Connection c, List<UsageRecord> rs, String sql, MeasuredBatch measured)
      throws SQLException {
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
    Long[] kvByteNs = new Long[n];
    Long[] peakKvBytes = new Long[n];
    String[] sessionId = new String[n];
    Long[] batchCompany = new Long[n];
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
      startedAt[i] = micros(r.startedAt());
      finishedAt[i] = micros(r.finishedAt());
      kvByteNs[i] = r.kvByteNs();
      peakKvBytes[i] = r.peakKvBytes();
      sessionId[i] = r.sessionId();
      batchCompany[i] =
          r.batchCompanySum() == UsageRecord.NOT_MEASURED ? null : r.batchCompanySum();
    }
    List<Array> arrays = new ArrayList<>(RECORD_PARAMETERS + 12);
    try (PreparedStatement ps = c.prepareStatement(sql)) {
      Object[][] columns = {
        requestId,
        apiKeyId,
        accountId,
        model,
        device,
        deviceName,
        deviceUuid,
        timerKind,
        driverVersion,
        cudaVersion,
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
        kvByteNs,
        peakKvBytes,
        sessionId,
        batchCompany
      };
      for (int col = 0; col < columns.length; col++) {
        ps.setArray(col + 1, array(c, columns[col], arrays));
      }
      ps.setString(columns.length + 1, replicaOf(measured));
      if (measured != null) {
        bindMeasured(c, ps, RECORD_PARAMETERS, measured, arrays);
      }
      try (ResultSet result = ps.executeQuery()) {
        result.next();
        return (int) result.getLong(1);
      }
    } finally {
      freeAll(arrays);
    }
  }

  static String sqlState(Throwable e) {
    for (Throwable t = e; t != null; t = t.getCause()) {
      if (t instanceof SQLException s && s.getSQLState() != null) {
        return s.getSQLState();
      }
    }
    return null;
  }
}
