package io.gpumeter.billing;

/**
 * What a replay of the charges set aside did ({@code gpumeter replay}, {@code POST /admin/replay}):
 * the intact records of quarantined outbox segments and the dead-letter entries, re-applied one by
 * one through the idempotent ledger.
 *
 * @param applied records stored now
 * @param alreadyPresent records already stored under the same request id (nothing changed)
 * @param refused records the database refused again (a constraint or data error): still set aside
 * @param segmentsCleared quarantined segments whose records are all stored now (moved to {@code
 *     quarantine/replayed/})
 * @param segmentsLeft quarantined segments still holding a refused record
 * @param deadLettersLeft entries left in {@code dead-letter.log} (the refused ones)
 */
public record SetAsideReplay(
    long applied,
    long alreadyPresent,
    long refused,
    int segmentsCleared,
    int segmentsLeft,
    long deadLettersLeft) {

  /** One line for a terminal or a log. */
  public String toText() {
    return "replay: applied "
        + applied
        + ", already present "
        + alreadyPresent
        + ", still refused "
        + refused
        + "; quarantined segments cleared "
        + segmentsCleared
        + ", left "
        + segmentsLeft
        + "; dead letters left "
        + deadLettersLeft;
  }
}
