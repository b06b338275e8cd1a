package io.gpumeter.billing;

import java.util.List;

/**
 * Measured device time recorded but not yet durable. The ledger takes it with every batch it writes
 * and commits it in the same transaction as the batch's usage records (or fsyncs it into the outbox
 * with them), so measured time has the same durability as the charges it is reconciled with.
 * Thread-safe.
 */
public interface PendingMeasuredTime {

  /** Takes everything pending, one delta per (minute, model, device), sorted; may be empty. */
  List<MeasuredDelta> take();

  /** Puts back deltas that were taken but could not be made durable; they are taken again. */
  void putBack(List<MeasuredDelta> deltas);

  /** Nothing is ever pending (tests and tools that do not measure). */
  PendingMeasuredTime NONE =
      new PendingMeasuredTime() {
        @Override
        public List<MeasuredDelta> take() {
          return List.of();
        }

        @Override
        public void putBack(List<MeasuredDelta> deltas) {
          if (!deltas.isEmpty()) {
            throw new IllegalStateException("nothing was taken from PendingMeasuredTime.NONE");
          }
        }
      };
}
