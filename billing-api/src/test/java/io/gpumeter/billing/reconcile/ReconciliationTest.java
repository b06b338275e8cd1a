package io.gpumeter.billing.reconcile;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.ReconciliationReport;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.ledger.JdbcLedgerStore;
import io.gpumeter.billing.ledger.MeasuredBatch;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Timestamp;
import java.time.Clock;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The minutely device-time table against the ledger. A small simulated server drives both sides the
 * way the real one does: per step, shares split among the requests in it and the step's time
 * recorded; per finished request, a usage record. Each test uses its own hour and model name.
 */
class ReconciliationTest {
  @TempDir static Path tmp;
  static Database db;
  static JdbcLedgerStore ledger;
  static Reconciliation reconciliation;

  @BeforeAll
  static void start() {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
    ledger = new JdbcLedgerStore(db.ledgerDataSource(), JdbcLedgerStore.Method.UNNEST, OWNER);
    reconciliation = new Reconciliation(db.dataSource());
  }

  @AfterAll
  static void stop() {
    db.close();
  }

  /** A clock the test moves. */
  static final class TestClock extends Clock {
    final AtomicReference<Instant> now;

    TestClock(Instant start) {
      now = new AtomicReference<>(start);
    }

    @Override
    public Instant instant() {
      return now.get();
    }

    @Override
    public java.time.ZoneId getZone() {
      return ZoneOffset.UTC;
    }

    @Override
    public Clock withZone(java.time.ZoneId zone) {
      return this;
    }
  }

  /** A request in flight: its shares so far. */
  static final class Req {
    final String id;
    final Instant started;
    long share;
    int steps;

    Req(String id, Instant started) {
      this.id = id;
      this.started = started;
    }

    UsageRecord finish(Instant at, String model) {
      return new UsageRecord(
          id,
          9401,
          1,
          model,
          TimerInfo.cpu("cpu"),
          "tokens",
          share,
          share,
          0,
          3,
          0,
          0,
          steps,
          UsageStatus.OK,
          started,
          at);
    }
  }

  /** One step of {@code ns} split evenly (remainder to the first) among {@code in}. */
  static void step(ReconciliationRecorder rec, Instant at, String model, long ns, List<Req> in) {
    long each = ns / in.size();
    long rest = ns - each * in.size();
    for (int i = 0; i < in.size(); i++) {
      in.get(i).share += each + (i == 0 ? rest : 0);
      in.get(i).steps++;
    }
    rec.record(at, model, "cpu", ns, ns, 0, 1);
  }

  static final UUID OWNER = UUID.randomUUID();
  static final UUID INSTANCE = UUID.randomUUID();

  /** What the ledger does with every batch: the pending deltas, in one transaction. */
  static void flush(ReconciliationRecorder rec) throws Exception {
    MeasuredBatch b = MeasuredBatch.of(OWNER, INSTANCE, rec.take(), List.of());
    if (b != null) {
      ledger.write(List.of(), b);
    }
  }

  static Instant hour(int hoursAgo) {
    return Instant.now().truncatedTo(ChronoUnit.HOURS).minus(hoursAgo, ChronoUnit.HOURS);
  }

  @Test
  void aHealthyServerReconcilesToExactlyZeroOverAClosedRange() throws Exception {
    String model = "healthy";
    Instant h = hour(5);
    ReconciliationRecorder rec = new ReconciliationRecorder(Clock.systemUTC());
    // load and warm-up: system time, never charged
    rec.record(h.plusSeconds(5), model, "cpu", 9_000, 0, 9_000, 0);
    // three minutes of traffic, requests sharing steps, all inside [h, h+5m)
    List<UsageRecord> records = new ArrayList<>();
    Req a = new Req("h-a", h.plusSeconds(10));
    Req b = new Req("h-b", h.plusSeconds(11));
    Instant t = h.plusSeconds(12);
    for (int i = 0; i < 100; i++, t = t.plusMillis(1500)) { // crosses two minute boundaries
      step(rec, t, model, 1_001 + i, i < 60 ? List.of(a, b) : List.of(a));
      if (i == 59) {
        records.add(b.finish(t.plusMillis(1), model));
      }
    }
    records.add(a.finish(t, model));
    ledger.write(records);
    flush(rec);

    ReconciliationReport r = reconciliation.report(h, h.plus(5, ChronoUnit.MINUTES));
    assertThat(r.lines()).hasSize(1);
    ReconciliationReport.Line line = r.lines().get(0);
    assertThat(line.records()).isEqualTo(2);
    assertThat(line.chargedNs()).isEqualTo(a.share + b.share).isPositive();
    assertThat(line.driftNs()).isZero();
    assertThat(line.unattributedNs()).isZero();
    assertThat(line.systemNs()).isEqualTo(9_000);
    assertThat(line.steps()).isEqualTo(100);
    assertThat(r.exact()).isTrue();
    assertThat(r.balanced()).isTrue();
    assertThat(r.toText()).contains("healthy").contains("exact");

    // minutes were really split: the steps span three minute rows
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement("SELECT count(*) FROM device_time_minutely WHERE model = ?")) {
      ps.setString(1, model);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        assertThat(rs.getInt(1)).isEqualTo(3);
      }
    }
  }

  @Test
  void aLostChargeShowsAsPositiveDriftAndADoubledOneCannotHappen() throws Exception {
    String model = "lossy";
    Instant h = hour(6);
    ReconciliationRecorder rec = new ReconciliationRecorder(Clock.systemUTC());
    Req a = new Req("l-a", h.plusSeconds(1));
    Req b = new Req("l-b", h.plusSeconds(1));
    step(rec, h.plusSeconds(2), model, 1_000, List.of(a));
    step(rec, h.plusSeconds(3), model, 3_000, List.of(b));
    flush(rec);
    UsageRecord ra = a.finish(h.plusSeconds(4), model);
    UsageRecord rb = b.finish(h.plusSeconds(4), model);
    ledger.write(List.of(ra)); // b's charge never reached the ledger
    ledger.write(List.of(ra)); // a replayed twice: stored once
    ReconciliationReport r = reconciliation.report(h, h.plus(1, ChronoUnit.MINUTES));
    assertThat(r.exact()).isTrue();
    assertThat(r.lines().get(0).driftNs()).isEqualTo(rb.deviceNs()).isEqualTo(3_000);
    assertThat(r.balanced()).isFalse();
  }

  @Test
  void aRequestStraddlingTheBoundaryIsFlaggedAndExplainsTheDrift() throws Exception {
    String model = "straddle";
    Instant h = hour(7);
    ReconciliationRecorder rec = new ReconciliationRecorder(Clock.systemUTC());
    Req a = new Req("s-a", h.minusSeconds(20));
    step(rec, h.minusSeconds(10), model, 700, List.of(a)); // before the range
    step(rec, h.plusSeconds(10), model, 300, List.of(a));
    flush(rec);
    ledger.write(List.of(a.finish(h.plusSeconds(11), model)));
    ReconciliationReport inside = reconciliation.report(h, h.plus(1, ChronoUnit.MINUTES));
    assertThat(inside.exact()).isFalse();
    assertThat(inside.straddlingAtFrom()).isEqualTo(1);
    assertThat(inside.lines().get(0).driftNs()).isEqualTo(300 - 1_000);
    // a range around the whole request is exact and zero
    ReconciliationReport around =
        reconciliation.report(h.minus(1, ChronoUnit.MINUTES), h.plus(1, ChronoUnit.MINUTES));
    assertThat(around.exact()).isTrue();
    assertThat(around.lines().get(0).driftNs()).isZero();
    // ... and the range before it sees the step but not the charge
    ReconciliationReport before = reconciliation.report(h.minus(1, ChronoUnit.MINUTES), h);
    assertThat(before.straddlingAtTo()).isEqualTo(1);
    assertThat(before.lines().get(0).driftNs()).isEqualTo(700);
  }

  @Test
  void deltasAddUpAcrossFlushesMinutesAndLateArrivals() throws Exception {
    String model = "flushes";
    Instant h = hour(8);
    TestClock clock = new TestClock(h.plusSeconds(10));
    ReconciliationRecorder rec = new ReconciliationRecorder(clock);
    rec.record(model, "cuda:0", 100, 60, 40, 1);
    clock.now.set(h.plusSeconds(50));
    rec.record(model, "cuda:0", 100, 100, 0, 1);
    flush(rec);
    rec.record(model, "cuda:0", 5, 5, 0, 1); // same minute, after a flush: the upsert adds
    clock.now.set(h.plusSeconds(70));
    rec.record(model, "cuda:0", 7, 7, 0, 1); // next minute
    rec.record(h.plusSeconds(30), model, "cuda:0", 1, 1, 0, 1); // late, for the first minute
    rec.record(model, "cuda:1", 9, 9, 0, 1); // another device
    flush(rec);
    assertThat(minute(model, "cuda:0", h)).containsExactly(206, 166, 40, 4);
    assertThat(minute(model, "cuda:0", h.plusSeconds(60))).containsExactly(7, 7, 0, 1);
    assertThat(minute(model, "cuda:1", h.plusSeconds(60))).containsExactly(9, 9, 0, 1);
    assertThatThrownBy(() -> rec.record(model, "cpu", -1, 0, 0, 0))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> reconciliation.report(h, h))
        .isInstanceOf(IllegalArgumentException.class);
  }

  @Test
  void aCrashedProcessesUnrecordedSharesBecomeUnbilledTimeAndDriftStaysZero() throws Exception {
    String model = "crashed";
    Instant h = hour(9);
    UUID owner = UUID.randomUUID();
    UUID dead = UUID.randomUUID();
    ReconciliationRecorder rec = new ReconciliationRecorder(Clock.systemUTC());
    Req a = new Req("c-a", h.plusSeconds(1));
    Req b = new Req("c-b", h.plusSeconds(1));
    step(rec, h.plusSeconds(2), model, 1_000, List.of(a, b));
    step(rec, h.plusSeconds(70), model, 600, List.of(a, b)); // the next minute
    UsageRecord ra = a.finish(h.plusSeconds(71), model);
    // a's charge is committed with the deltas of both steps; b was in flight when the process died
    MeasuredBatch batch = MeasuredBatch.of(owner, dead, rec.take(), List.of(ra));
    assertThat(ledger.write(List.of(ra), batch)).isEqualTo(1);
    ledger.write(List.of(ra), batch); // the same batch again (a replay): added once
    ReconciliationReport before = reconciliation.report(h, h.plus(2, ChronoUnit.MINUTES));
    assertThat(before.lines().get(0).driftNs()).isEqualTo(b.share).isEqualTo(800);

    // the successor on the same outbox settles the dead process once
    assertThat(ledger.settleEarlierInstances(owner, UUID.randomUUID())).isEqualTo(b.share);
    assertThat(ledger.settleEarlierInstances(owner, UUID.randomUUID())).isZero();
    ReconciliationReport after = reconciliation.report(h, h.plus(2, ChronoUnit.MINUTES));
    ReconciliationReport.Line line = after.lines().get(0);
    assertThat(line.driftNs()).isZero();
    assertThat(line.unbilledNs()).isEqualTo(b.share);
    assertThat(line.measuredNs()).isEqualTo(1_600);
    assertThat(line.chargedNs()).isEqualTo(ra.deviceNs());
    assertThat(after.balanced()).isTrue();
    // taken from the latest minute first (all of its 600), the rest (200) from the one before
    assertThat(unbilled(model, dead)).containsExactly(200L, 600L);
  }

  @Test
  void driftIsReportedPerReplicaAndACrashIsSettledInItsOwnReplicasMinutes() throws Exception {
    String model = "replicas";
    Instant h = hour(11);
    UUID one = UUID.randomUUID();
    UUID two = UUID.randomUUID();
    UUID twoDead = UUID.randomUUID();
    // both replicas run the model on a device labelled "cpu", in the same minutes
    ReconciliationRecorder rec1 = new ReconciliationRecorder(Clock.systemUTC());
    ReconciliationRecorder rec2 = new ReconciliationRecorder(Clock.systemUTC());
    Req a = new Req("r-a", h.plusSeconds(1));
    Req b = new Req("r-b", h.plusSeconds(1));
    Req c = new Req("r-c", h.plusSeconds(1));
    step(rec1, h.plusSeconds(2), model, 1_000, List.of(a));
    step(rec2, h.plusSeconds(2), model, 3_000, List.of(b, c));
    step(rec1, h.plusSeconds(3), model, 500, List.of(a));
    rec2.record(h.plusSeconds(3), model, "cpu", 70, 0, 70, 0); // system time on replica 2
    UsageRecord ra = a.finish(h.plusSeconds(4), model);
    UsageRecord rb = b.finish(h.plusSeconds(4), model);
    ledger.write(List.of(ra), MeasuredBatch.of(one, UUID.randomUUID(), rec1.take(), List.of(ra)));
    // replica 2's process dies with c in flight; b's charge was stored with its steps
    ledger.write(List.of(rb), MeasuredBatch.of(two, twoDead, rec2.take(), List.of(rb)));
    Instant to = h.plus(1, ChronoUnit.MINUTES);

    ReconciliationReport before = reconciliation.report(h, to);
    assertThat(before.lines())
        .singleElement()
        .satisfies(l -> assertThat(l.driftNs()).isEqualTo(1_500));
    assertThat(before.replicas())
        .extracting(ReconciliationReport.ReplicaLine::replica)
        .containsExactlyElementsOf(
            // the report lists replicas in the order of their text (as PostgreSQL orders uuid),
            // not UUID.compareTo's signed order
            List.of(one, two).stream()
                .sorted(java.util.Comparator.comparing(UUID::toString))
                .toList());
    assertThat(replica(before, one).driftNs()).isZero();
    assertThat(replica(before, one).ledgerNs()).isEqualTo(1_500);
    assertThat(replica(before, two).driftNs()).isEqualTo(c.share).isEqualTo(1_500);
    assertThat(replica(before, two).systemNs()).isEqualTo(70);
    assertThat(before.drifts()).isTrue();

    // replica 2's next process settles what its dead one handed out: only in replica 2's minutes
    assertThat(ledger.settleEarlierInstances(two, UUID.randomUUID())).isEqualTo(c.share);
    ReconciliationReport after = reconciliation.report(h, to);
    assertThat(after.balanced()).isTrue();
    assertThat(after.drifts()).isFalse();
    assertThat(after.totalDriftNs()).isZero();
    assertThat(replica(after, one).chargedNs()).isEqualTo(1_500);
    assertThat(replica(after, one).unbilledNs()).isZero();
    assertThat(replica(after, two).unbilledNs()).isEqualTo(1_500);
    assertThat(replica(after, two).chargedNs()).isEqualTo(rb.deviceNs());
    assertThat(after.toText()).contains(one.toString()).contains(two.toString());

    // one replica alone: its lines and its line only
    ReconciliationReport onlyOne = reconciliation.report(h, to, one);
    assertThat(onlyOne.replica()).isEqualTo(one);
    assertThat(onlyOne.replicas())
        .extracting(ReconciliationReport.ReplicaLine::replica)
        .containsExactly(one);
    assertThat(onlyOne.lines())
        .singleElement()
        .satisfies(
            l -> {
              assertThat(l.measuredNs()).isEqualTo(1_500);
              assertThat(l.records()).isEqualTo(1);
              assertThat(l.driftNs()).isZero();
            });
    assertThat(onlyOne.toText()).contains("of replica " + one).doesNotContain(two.toString());
    ReconciliationReport onlyTwo = reconciliation.report(h, to, two);
    assertThat(onlyTwo.lines().get(0).measuredNs()).isEqualTo(3_070);
    assertThat(onlyTwo.lines().get(0).records()).isEqualTo(1);
    assertThat(onlyTwo.balanced()).isTrue();

    // a charge of replica 1 lost: drift on replica 1 only, and overall
    Req d = new Req("r-d", h.plusSeconds(5));
    step(rec1, h.plusSeconds(6), model, 400, List.of(d));
    ledger.write(List.of(), MeasuredBatch.of(one, UUID.randomUUID(), rec1.take(), List.of()));
    ReconciliationReport lost = reconciliation.report(h, to);
    assertThat(replica(lost, one).driftNs()).isEqualTo(400);
    assertThat(replica(lost, two).driftNs()).isZero();
    assertThat(lost.totalDriftNs()).isEqualTo(400);
    assertThat(reconciliation.report(h, to, two).drifts()).isFalse();
    assertThat(reconciliation.report(h, to, one).drifts()).isTrue();
  }

  static ReconciliationReport.ReplicaLine replica(ReconciliationReport r, UUID id) {
    return r.replicas().stream().filter(l -> l.replica().equals(id)).findFirst().orElseThrow();
  }

  @Test
  void theSchemaRefusesARecordThatFinishedBeforeItStarted() {
    Req a = new Req("v5-a", hour(10).plusSeconds(5));
    UsageRecord r = a.finish(hour(10).plusSeconds(4), "v5");
    assertThatThrownBy(() -> ledger.write(List.of(r)))
        .isInstanceOfSatisfying(
            io.gpumeter.billing.ledger.LedgerWriteException.class,
            e -> assertThat(e.isRecordError()).isTrue())
        .hasMessageContaining("23514");
  }

  /** The unbilled_time rows of one instance, minute ascending, reason crash. */
  static List<Long> unbilled(String model, UUID instance) throws Exception {
    List<Long> out = new ArrayList<>();
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT unbilled_ns FROM unbilled_time WHERE model = ? AND instance_id = ?::uuid"
                    + " AND reason = 'crash' ORDER BY minute")) {
      ps.setString(1, model);
      ps.setString(2, instance.toString());
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          out.add(rs.getLong(1));
        }
      }
    }
    return out;
  }

  static long[] minute(String model, String device, Instant minute) throws Exception {
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps =
            c.prepareStatement(
                "SELECT measured_ns, charged_ns, system_ns, steps FROM device_time_minutely"
                    + " WHERE model = ? AND device = ? AND minute = ?")) {
      ps.setString(1, model);
      ps.setString(2, device);
      ps.setTimestamp(3, Timestamp.from(minute));
      try (ResultSet rs = ps.executeQuery()) {
        assertThat(rs.next()).isTrue();
        return new long[] {rs.getLong(1), rs.getLong(2), rs.getLong(3), rs.getLong(4)};
      }
    }
  }
}
