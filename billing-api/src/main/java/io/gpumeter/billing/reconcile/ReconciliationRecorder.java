package io.gpumeter.billing.reconcile;

import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.MeasuredTimeRecorder;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Persists measured device time per minute, model and device into {@code device_time_minutely}, for
 * {@link Reconciliation}. The server calls {@link #record} with deltas from its schedulers; they
 * are added up in memory and written every {@code flushInterval} (a minute by default) as upserts
 * that add ({@code ON CONFLICT ... DO UPDATE SET x = x + EXCLUDED.x}), and once more on {@link
 * #close()}.
 *
 * <p>Minute rule: deltas count in the UTC minute of the instant they are recorded at: {@link
 * #record(Instant, String, String, long, long, long, long)} names it, the short form uses the
 * clock. For an exact reconciliation, record a step's time after the step ended and before
 * publishing the usage records of requests it finished, with the clock that stamps {@code
 * finishedAt} (see {@link Reconciliation}).
 *
 * <p>Concurrency: {@code record} is called on scheduler threads and never blocks on I/O: a lookup
 * in two concurrent maps (no allocation once a model and device were seen) and a short lock on that
 * pair's accumulator. When the minute changes, the finished minute's totals are queued for the next
 * flush. The flusher takes the queue and the open minutes' partial totals and writes them in one
 * statement; if the database fails, they are put back and written with the next flush (idempotent
 * enough: a flush that committed but whose reply was lost would be added twice; that is the only
 * way to double count, and it shows up as drift).
 */
final class ReconciliationRecorder implements MeasuredTimeRecorder, AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(ReconciliationRecorder.class);

  private static final String UPSERT =
      "INSERT INTO device_time_minutely (minute, model, device, measured_ns, charged_ns,"
          + " system_ns, steps)\n"
          + "SELECT to_timestamp(m * 60), model, device, measured, charged, system, steps\n"
          + "FROM unnest(?::int8[], ?::text[], ?::text[], ?::int8[], ?::int8[], ?::int8[],"
          + " ?::int8[]) AS t(m, model, device, measured, charged, system, steps)\n"
          + "ON CONFLICT (minute, model, device) DO UPDATE SET\n"
          + "  measured_ns = device_time_minutely.measured_ns + EXCLUDED.measured_ns,\n"
          + "  charged_ns = device_time_minutely.charged_ns + EXCLUDED.charged_ns,\n"
          + "  system_ns = device_time_minutely.system_ns + EXCLUDED.system_ns,\n"
          + "  steps = device_time_minutely.steps + EXCLUDED.steps";

  private final DataSource dataSource;
  private final Clock clock;
  private final Map<String, Map<String, Cell>> cells = new ConcurrentHashMap<>();
  private final ConcurrentLinkedQueue<Delta> finished = new ConcurrentLinkedQueue<>();
  private final ScheduledExecutorService flusher;
  private final Object flushLock = new Object();
  private volatile boolean closed;

  /** Totals of one (minute, model, device); minute = epoch minutes (UTC). */
  record Delta(
      long minute,
      String model,
      String device,
      long measured,
      long charged,
      long system,
      long steps) {}

  /** The open minute of one (model, device); guarded by itself. */
  private static final class Cell {
    final String model;
    final String device;
    long minute = Long.MIN_VALUE;
    long measured;
    long charged;
    long system;
    long steps;

    Cell(String model, String device) {
      this.model = model;
      this.device = device;
    }

    boolean isEmpty() {
      return measured == 0 && charged == 0 && system == 0 && steps == 0;
    }

    Delta takeLocked() {
      Delta d = new Delta(minute, model, device, measured, charged, system, steps);
      measured = 0;
      charged = 0;
      system = 0;
      steps = 0;
      return d;
    }
  }

  /**
   * @param flushInterval how often accumulated deltas are written; zero writes only on {@link
   *     #flush()} and {@link #close()} (tests)
   */
  ReconciliationRecorder(DataSource dataSource, Clock clock, Duration flushInterval) {
    this.dataSource = Objects.requireNonNull(dataSource, "dataSource");
    this.clock = Objects.requireNonNull(clock, "clock");
    if (flushInterval == null || flushInterval.isNegative()) {
      throw new IllegalArgumentException("flushInterval must be >= 0, was " + flushInterval);
    }
    if (flushInterval.isZero()) {
      flusher = null;
    } else {
      flusher =
          Executors.newSingleThreadScheduledExecutor(
              r -> {
                Thread t = new Thread(r, "gpumeter-reconciliation-flush");
                t.setDaemon(true);
                return t;
              });
      long ms = flushInterval.toMillis();
      flusher.scheduleWithFixedDelay(this::flushQuietly, ms, ms, TimeUnit.MILLISECONDS);
    }
  }

  /**
   * Adds deltas for {@code model} on {@code device} in the current minute of the clock.
   *
   * @throws IllegalArgumentException if a delta is negative
   */
  @Override
  public void record(
      String model, String device, long measuredNs, long chargedNs, long systemNs, long steps) {
    record(clock.instant(), model, device, measuredNs, chargedNs, systemNs, steps);
  }

  /**
   * Adds deltas for {@code model} on {@code device} in the UTC minute of {@code at}.
   *
   * @param measuredNs device time measured (charged + system)
   * @param chargedNs part of it handed out to requests as shares
   * @param systemNs part of it not charged to any request (load, warm-up)
   * @param steps steps measured
   * @throws IllegalArgumentException if a delta is negative
   */
  void record(
      Instant at,
      String model,
      String device,
      long measuredNs,
      long chargedNs,
      long systemNs,
      long steps) {
    Objects.requireNonNull(model, "model");
    Objects.requireNonNull(device, "device");
    if (measuredNs < 0 || chargedNs < 0 || systemNs < 0 || steps < 0) {
      throw new IllegalArgumentException(
          "reconciliation deltas must be >= 0, were measured="
              + measuredNs
              + " charged="
              + chargedNs
              + " system="
              + systemNs
              + " steps="
              + steps);
    }
    long minute = Math.floorDiv(at.getEpochSecond(), 60);
    Cell cell = cell(model, device);
    synchronized (cell) {
      if (minute < cell.minute) {
        // late delta for a minute already rolled over: queue it on its own
        finished.add(new Delta(minute, model, device, measuredNs, chargedNs, systemNs, steps));
        return;
      }
      if (minute > cell.minute) {
        if (!cell.isEmpty()) {
          finished.add(cell.takeLocked());
        }
        cell.minute = minute;
      }
      cell.measured += measuredNs;
      cell.charged += chargedNs;
      cell.system += systemNs;
      cell.steps += steps;
    }
  }

  private Cell cell(String model, String device) {
    Map<String, Cell> byDevice = cells.get(model);
    if (byDevice == null) {
      byDevice = cells.computeIfAbsent(model, k -> new ConcurrentHashMap<>());
    }
    Cell cell = byDevice.get(device);
    if (cell == null) {
      cell = byDevice.computeIfAbsent(device, d -> new Cell(model, device));
    }
    return cell;
  }

  /**
   * Writes everything recorded so far (finished minutes and the open minute's partial totals).
   *
   * @throws BillingException if the database fails; the deltas are kept for the next flush
   */
  void flush() {
    synchronized (flushLock) {
      List<Delta> taken = new ArrayList<>();
      Delta d;
      while ((d = finished.poll()) != null) {
        taken.add(d);
      }
      for (Map<String, Cell> byDevice : cells.values()) {
        for (Cell cell : byDevice.values()) {
          synchronized (cell) {
            if (!cell.isEmpty()) {
              taken.add(cell.takeLocked());
            }
          }
        }
      }
      if (taken.isEmpty()) {
        return;
      }
      List<Delta> merged = merge(taken);
      try {
        write(merged);
      } catch (SQLException e) {
        finished.addAll(merged);
        throw new BillingException(
            "could not write " + merged.size() + " reconciliation rows; kept for the next flush",
            e);
      }
    }
  }

  private void flushQuietly() {
    try {
      flush();
    } catch (RuntimeException e) {
      LOG.warn("Reconciliation flush failed: {}", e.getMessage());
    }
  }

  /** One row per key (an upsert may not touch a row twice), sorted so replicas lock in order. */
  static List<Delta> merge(List<Delta> deltas) {
    TreeMap<String, Delta> byKey = new TreeMap<>();
    for (Delta d : deltas) {
      String key =
          String.format("%020d", d.minute()) + '\u0000' + d.model() + '\u0000' + d.device();
      byKey.merge(
          key,
          d,
          (a, b) ->
              new Delta(
                  a.minute(),
                  a.model(),
                  a.device(),
                  a.measured() + b.measured(),
                  a.charged() + b.charged(),
                  a.system() + b.system(),
                  a.steps() + b.steps()));
    }
    List<Delta> out = new ArrayList<>(byKey.values());
    out.sort(
        Comparator.comparingLong(Delta::minute)
            .thenComparing(Delta::model)
            .thenComparing(Delta::device));
    return out;
  }

  private void write(List<Delta> rows) throws SQLException {
    int n = rows.size();
    Long[] minute = new Long[n];
    String[] model = new String[n];
    String[] device = new String[n];
    Long[] measured = new Long[n];
    Long[] charged = new Long[n];
    Long[] system = new Long[n];
    Long[] steps = new Long[n];
    for (int i = 0; i < n; i++) {
      Delta d = rows.get(i);
      minute[i] = d.minute();
      model[i] = d.model();
      device[i] = d.device();
      measured[i] = d.measured();
      charged[i] = d.charged();
      system[i] = d.system();
      steps[i] = d.steps();
    }
    try (Connection c = dataSource.getConnection();
        PreparedStatement ps = c.prepareStatement(UPSERT)) {
      c.setAutoCommit(true);
      ps.setArray(1, c.createArrayOf("int8", minute));
      ps.setArray(2, c.createArrayOf("text", model));
      ps.setArray(3, c.createArrayOf("text", device));
      ps.setArray(4, c.createArrayOf("int8", measured));
      ps.setArray(5, c.createArrayOf("int8", charged));
      ps.setArray(6, c.createArrayOf("int8", system));
      ps.setArray(7, c.createArrayOf("int8", steps));
      ps.executeUpdate();
    }
  }

  /** Stops the periodic flush and writes what is left; logs (does not throw) if that fails. */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    if (flusher != null) {
      flusher.shutdown();
      try {
        flusher.awaitTermination(10, TimeUnit.SECONDS);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
    try {
      flush();
    } catch (RuntimeException e) {
      LOG.error(
          "Reconciliation deltas could not be written on close and are lost: {}", e.getMessage());
    }
  }
}
