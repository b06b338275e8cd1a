package io.gpumeter.billing;

import java.nio.file.Path;

/**
 * What a local commit log holds that PostgreSQL does not (yet): read read-only from the log's
 * folder, checked against the database by request id and measured batch id. Used by the CLI {@code
 * reconcile} so that charges a running server has acknowledged but not yet shipped are reported as
 * shipping lag, never as drift.
 *
 * @param directory the commit log's folder
 * @param records usage records in the log that are not in {@code usage_request_ids}
 * @param deviceNs their device time
 * @param measuredBatches measured batches in the log that are not in {@code measured_batches}
 */
public record CommitLogBacklog(Path directory, long records, long deviceNs, long measuredBatches) {
  /** Whether anything in the log is still missing from the database. */
  public boolean waiting() {
    return records > 0 || measuredBatches > 0;
  }

  /** One line for an operator. */
  public String describe() {
    return records
        + " charges ("
        + deviceNs
        + " device ns) and "
        + measuredBatches
        + " measured batches in the local commit log at "
        + directory
        + " are not yet in the billing database";
  }
}
