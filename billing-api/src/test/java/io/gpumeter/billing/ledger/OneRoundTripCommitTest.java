package io.gpumeter.billing.ledger;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.MeasuredDelta;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.UsageRecord;
import java.io.PrintWriter;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.logging.Logger;
import javax.sql.DataSource;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Issue 9, item 2: a batch's records and its measured time are made durable by ONE statement in
 * auto-commit mode (one round trip to PostgreSQL, its commit included), with the guarantees of the
 * transaction it replaced: both or neither, and a replay adds each once. The calls the store makes
 * on its connections are counted through a wrapper around the real pool.
 */
class OneRoundTripCommitTest {
  @TempDir static Path tmp;
  static Database db;
  static List<String> calls = new ArrayList<>();
  static JdbcLedgerStore store;

  @BeforeAll
  static void start() {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
    store = new JdbcLedgerStore(counting(db.ledgerDataSource()));
  }

  @AfterAll
  static void stop() {
    db.close();
  }

  static final UUID OWNER = UUID.randomUUID();
  static final UUID INSTANCE = UUID.randomUUID();

  @Test
  void recordsAndMeasuredTimeAreOneStatementAndReplayAddsThemOnce() throws Exception {
    Instant at = Instant.now().truncatedTo(ChronoUnit.HOURS).minus(3, ChronoUnit.HOURS);
    long minute = Math.floorDiv(at.getEpochSecond(), 60) + 5;
    UsageRecord r1 =
        TestSupport.record("one-trip-1", 9501, 1, "one-trip", at.plusSeconds(300), 600, 400, 5, 1);
    UsageRecord r2 =
        TestSupport.record("one-trip-2", 9501, 1, "one-trip", at.plusSeconds(301), 300, 700, 5, 1);
    MeasuredBatch batch =
        MeasuredBatch.of(
            OWNER,
            INSTANCE,
            List.of(new MeasuredDelta(minute, "one-trip", "cpu", 2_500, 2_000, 500, 3)),
            List.of(r1, r2));

    calls.clear();
    assertThat(store.write(List.of(r1, r2), batch)).isEqualTo(2);
    // one statement, run in auto-commit mode: no BEGIN/COMMIT round trips around it
    assertThat(calls).containsExactly("prepareStatement autoCommit=true", "executeQuery");

    assertThat(count("SELECT count(*) FROM usage_records WHERE model = 'one-trip'")).isEqualTo(2);
    assertThat(measured("one-trip", minute)).containsExactly(2_500L, 2_000L, 500L, 3L);
    assertThat(claims(batch.batchId())).isEqualTo(1);

    // a replay of the same batch (the outbox after a crash, a retry): nothing added twice
    assertThat(store.write(List.of(r1, r2), batch)).isZero();
    assertThat(count("SELECT count(*) FROM usage_records WHERE model = 'one-trip'")).isEqualTo(2);
    assertThat(measured("one-trip", minute)).containsExactly(2_500L, 2_000L, 500L, 3L);
  }

  @Test
  void aRefusedRecordTakesItsBatchesMeasuredTimeWithIt() throws Exception {
    Instant at = Instant.now().truncatedTo(ChronoUnit.HOURS).minus(4, ChronoUnit.HOURS);
    long minute = Math.floorDiv(at.getEpochSecond(), 60) + 7;
    UsageRecord good =
        TestSupport.record("refused-good", 9502, 1, "refused", at.plusSeconds(420), 600, 400, 5, 1);
    UsageRecord ok =
        TestSupport.record("refused-bad", 9502, 1, "refused", at.plusSeconds(421), 600, 400, 5, 1);
    // finished before it started: refused by the schema (23514)
    UsageRecord bad =
        new UsageRecord(
            ok.requestId(),
            ok.apiKeyId(),
            ok.accountId(),
            ok.model(),
            ok.timer(),
            ok.weightPolicy(),
            ok.deviceNs(),
            ok.prefillNs(),
            ok.decodeNs(),
            ok.promptTokens(),
            ok.completionTokens(),
            ok.queueNs(),
            ok.steps(),
            ok.status(),
            ok.finishedAt(),
            ok.finishedAt().minusSeconds(1));
    MeasuredBatch batch =
        MeasuredBatch.of(
            OWNER,
            INSTANCE,
            List.of(new MeasuredDelta(minute, "refused", "cpu", 2_000, 2_000, 0, 2)),
            List.of(good, bad));

    assertThatThrownBy(() -> store.write(List.of(good, bad), batch))
        .isInstanceOfSatisfying(
            LedgerWriteException.class, e -> assertThat(e.isRecordError()).isTrue());
    // neither the good record nor the measured side nor the batch's claim was kept
    assertThat(count("SELECT count(*) FROM usage_records WHERE model = 'refused'")).isZero();
    assertThat(count("SELECT count(*) FROM device_time_minutely WHERE model = 'refused'")).isZero();
    assertThat(claims(batch.batchId())).isZero();

    // the same measured time with the good record alone (what the writer does next): stored once
    assertThat(store.write(List.of(good), batch)).isEqualTo(1);
    assertThat(measured("refused", minute)).containsExactly(2_000L, 2_000L, 0L, 2L);
  }

  @Test
  void measuredTimeAloneIsOneStatementToo() throws Exception {
    long minute = Math.floorDiv(Instant.now().getEpochSecond(), 60) - 600;
    MeasuredBatch batch =
        MeasuredBatch.of(
            OWNER,
            INSTANCE,
            List.of(new MeasuredDelta(minute, "alone", "cpu", 900, 0, 900, 1)),
            List.of());
    calls.clear();
    assertThat(store.write(List.of(), batch)).isZero();
    assertThat(calls).containsExactly("prepareStatement autoCommit=true", "executeQuery");
    assertThat(measured("alone", minute)).containsExactly(900L, 0L, 900L, 1L);
  }

  static long count(String sql) throws SQLException {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps = c.prepareStatement(sql);
        ResultSet rs = ps.executeQuery()) {
      rs.next();
      return rs.getLong(1);
    }
  }

  static long claims(UUID batchId) throws SQLException {
    return count("SELECT count(*) FROM measured_batches WHERE batch_id = '" + batchId + "'");
  }

  static List<Long> measured(String model, long minute) throws SQLException {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT measured_ns, charged_ns, system_ns, steps FROM device_time_minutely"
                    + " WHERE model = ? AND minute = ?")) {
      ps.setString(1, model);
      ps.setTimestamp(2, Timestamp.from(Instant.ofEpochSecond(minute * 60)));
      try (ResultSet rs = ps.executeQuery()) {
        assertThat(rs.next()).isTrue();
        return List.of(rs.getLong(1), rs.getLong(2), rs.getLong(3), rs.getLong(4));
      }
    }
  }

  /** The real pool, with the statements, executions and commits on its connections recorded. */
  static DataSource counting(DataSource real) {
    return new DataSource() {
      @Override
      public Connection getConnection() throws SQLException {
        return wrap(real.getConnection());
      }

      @Override
      public Connection getConnection(String user, String password) throws SQLException {
        return wrap(real.getConnection(user, password));
      }

      @Override
      public PrintWriter getLogWriter() throws SQLException {
        return real.getLogWriter();
      }

      @Override
      public void setLogWriter(PrintWriter out) throws SQLException {
        real.setLogWriter(out);
      }

      @Override
      public void setLoginTimeout(int seconds) throws SQLException {
        real.setLoginTimeout(seconds);
      }

      @Override
      public int getLoginTimeout() throws SQLException {
        return real.getLoginTimeout();
      }

      @Override
      public Logger getParentLogger() {
        return Logger.getGlobal();
      }

      @Override
      public <T> T unwrap(Class<T> iface) throws SQLException {
        return real.unwrap(iface);
      }

      @Override
      public boolean isWrapperFor(Class<?> iface) throws SQLException {
        return real.isWrapperFor(iface);
      }
    };
  }

  static Connection wrap(Connection c) {
    return (Connection)
        Proxy.newProxyInstance(
            OneRoundTripCommitTest.class.getClassLoader(),
            new Class<?>[] {Connection.class},
            (proxy, method, args) -> {
              switch (method.getName()) {
                case "prepareStatement", "prepareCall", "createStatement" ->
                    calls.add(method.getName() + " autoCommit=" + c.getAutoCommit());
                case "commit", "rollback" -> calls.add(method.getName());
                default -> {}
              }
              Object result = invoke(method, c, args);
              if (result instanceof PreparedStatement ps) {
                return wrap(ps);
              }
              return result;
            });
  }

  static PreparedStatement wrap(PreparedStatement ps) {
    return (PreparedStatement)
        Proxy.newProxyInstance(
            OneRoundTripCommitTest.class.getClassLoader(),
            new Class<?>[] {PreparedStatement.class},
            (proxy, method, args) -> {
              if (method.getName().startsWith("execute")) {
                calls.add(method.getName());
              }
              return invoke(method, ps, args);
            });
  }

  private static Object invoke(java.lang.reflect.Method method, Object target, Object[] args)
      throws Throwable {
    try {
      return method.invoke(target, args);
    } catch (InvocationTargetException e) {
      throw e.getCause();
    }
  }
}
