package io.gpumeter.billing.reconcile;

import io.gpumeter.billing.MeasuredDelta;
import io.gpumeter.billing.MeasuredTimeRecorder;
import io.gpumeter.billing.PendingMeasuredTime;
import java.time.Clock;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;

/**
 * Adds up measured device time per minute, model and device in memory, until the ledger takes it
 * ({@link #take()}) to write it in the same transaction as a batch of usage records (or into the
 * outbox with them), so that measured time is exactly as durable as the charges it is reconciled
 * with: a crash loses the two together, never one without the other.
 *
 * <p>Minute rule: deltas count in the UTC minute of the instant they are recorded at: {@link
 * #record(Instant, String, String, long, long, long, long)} names it, the short form uses the
 * clock. For an exact reconciliation, record a step's time after the step ended and before
 * publishing the usage records of requests it finished, with the clock that stamps {@code
 * finishedAt} (see {@link Reconciliation}).
 *
 * <p>Concurrency: {@code record} is called on scheduler threads and never blocks on I/O: a lookup
 * in two concurrent maps (no allocation once a model and device were seen) and a short lock on that
 * pair's accumulator. When the minute changes, the finished minute's totals are queued. {@link
 * #take()} (the ledger's writer) empties the queue and the open minutes' partial totals; {@link
 * #putBack} queues what could not be written, for the next take.
 */
final class ReconciliationRecorder implements MeasuredTimeRecorder, PendingMeasuredTime {

  private final Clock clock;
  private final Map<String, Map<String, Cell>> cells = new ConcurrentHashMap<>();
  private final ConcurrentLinkedQueue<MeasuredDelta> finished = new ConcurrentLinkedQueue<>();

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

    MeasuredDelta takeLocked() {
      MeasuredDelta d = new MeasuredDelta(minute, model, device, measured, charged, system, steps);
      measured = 0;
      charged = 0;
      system = 0;
      steps = 0;
      return d;
    }
  }

  ReconciliationRecorder(Clock clock) {
    this.clock = Objects.requireNonNull(clock, "clock");
  }

  /**
   * Adds deltas for {@code model} on {@code device} in the current minute of the clock.
   *
   * @throws IllegalArgumentException if a delta is negative or measured is not charged + system
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
   * @throws IllegalArgumentException if a delta is negative or measured is not charged + system
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
    if (measuredNs < 0
        || chargedNs < 0
        || systemNs < 0
        || steps < 0
        || measuredNs != chargedNs + systemNs) {
      throw new IllegalArgumentException(
          "reconciliation deltas must be >= 0 with measured = charged + system, were measured="
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
        finished.add(
            new MeasuredDelta(minute, model, device, measuredNs, chargedNs, systemNs, steps));
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

  /** Everything recorded so far (finished minutes and the open minutes' partial totals). */
  @Override
  public List<MeasuredDelta> take() {
    List<MeasuredDelta> taken = new ArrayList<>();
    MeasuredDelta d;
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
    return taken.isEmpty() ? List.of() : merge(taken);
  }

  @Override
  public void putBack(List<MeasuredDelta> deltas) {
    finished.addAll(deltas);
  }

  /** One row per key (an upsert may not touch a row twice), sorted so replicas lock in order. */
  static List<MeasuredDelta> merge(List<MeasuredDelta> deltas) {
    TreeMap<String, MeasuredDelta> byKey = new TreeMap<>();
    for (MeasuredDelta d : deltas) {
      String key =
          String.format("%020d", d.minute()) + '\u0000' + d.model() + '\u0000' + d.device();
      byKey.merge(
          key,
          d,
          (a, b) ->
              new MeasuredDelta(
                  a.minute(),
                  a.model(),
                  a.device(),
                  a.measuredNs() + b.measuredNs(),
                  a.chargedNs() + b.chargedNs(),
                  a.systemNs() + b.systemNs(),
                  a.steps() + b.steps()));
    }
    List<MeasuredDelta> out = new ArrayList<>(byKey.values());
    out.sort(
        Comparator.comparingLong(MeasuredDelta::minute)
            .thenComparing(MeasuredDelta::model)
            .thenComparing(MeasuredDelta::device));
    return out;
  }
}
