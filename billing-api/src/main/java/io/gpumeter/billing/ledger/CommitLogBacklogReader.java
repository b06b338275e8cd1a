package io.gpumeter.billing.ledger;

import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.CommitLogBacklog;
import io.gpumeter.metering.UsageRecord;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.sql.Array;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.stream.Stream;
import javax.sql.DataSource;

/**
 * Reads a {@link CommitLog}'s folder without changing it (no segment is created, prepared, or
 * deleted; a running server may own it) and asks the database which of its records and measured
 * batches are not stored yet. A segment that disappears while it is read was shipped and dropped; a
 * segment being written may end in a torn tail, which is skipped like at {@link CommitLog#open}.
 */
public final class CommitLogBacklogReader {
  private CommitLogBacklogReader() {}

  /**
   * The backlog of the log in {@code directory} against {@code dataSource}; empty when the folder
   * does not exist.
   *
   * @throws UncheckedIOException if the folder cannot be read
   * @throws BillingException if the database cannot be asked
   */
  public static CommitLogBacklog read(Path directory, DataSource dataSource) {
    List<UsageRecord> records = new ArrayList<>();
    List<MeasuredBatch> measured = new ArrayList<>();
    if (Files.isDirectory(directory)) {
      List<Path> segments;
      try (Stream<Path> files = Files.list(directory)) {
        segments =
            files
                .filter(
                    p -> {
                      String n = p.getFileName().toString();
                      return n.startsWith("commit-") && n.endsWith(".log");
                    })
                .sorted()
                .toList();
      } catch (IOException e) {
        throw new UncheckedIOException("cannot list the commit log in " + directory, e);
      }
      for (Path p : segments) {
        byte[] data;
        try {
          data = Files.readAllBytes(p);
        } catch (NoSuchFileException e) {
          continue; // shipped and dropped meanwhile
        } catch (IOException e) {
          throw new UncheckedIOException("cannot read " + p, e);
        }
        CommitLog.Scan s = CommitLog.scan(data);
        records.addAll(s.records());
        measured.addAll(s.measured());
      }
    }
    if (records.isEmpty() && measured.isEmpty()) {
      return new CommitLogBacklog(directory, 0, 0, 0);
    }
    try (Connection c = dataSource.getConnection()) {
      Set<String> storedIds =
          present(
              c,
              "SELECT request_id FROM usage_request_ids WHERE request_id = ANY(?)",
              "text",
              records.stream().map(UsageRecord::requestId).toArray());
      Set<String> storedBatches =
          present(
              c,
              "SELECT batch_id::text FROM measured_batches WHERE batch_id = ANY(?)",
              "uuid",
              measured.stream().map(MeasuredBatch::batchId).toArray());
      long missing = 0;
      long deviceNs = 0;
      for (UsageRecord r : records) {
        if (!storedIds.contains(r.requestId())) {
          missing++;
          deviceNs += r.deviceNs();
        }
      }
      long missingBatches = 0;
      for (MeasuredBatch m : measured) {
        if (!storedBatches.contains(m.batchId().toString())) {
          missingBatches++;
        }
      }
      return new CommitLogBacklog(directory, missing, deviceNs, missingBatches);
    } catch (SQLException e) {
      throw new BillingException("could not compare the commit log with the billing database", e);
    }
  }

  private static Set<String> present(Connection c, String sql, String type, Object[] keys)
      throws SQLException {
    Set<String> out = new HashSet<>();
    if (keys.length == 0) {
      return out;
    }
    Array array = c.createArrayOf(type, keys);
    try (PreparedStatement ps = c.prepareStatement(sql)) {
      ps.setArray(1, array);
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) {
          out.add(rs.getString(1));
        }
      }
    } finally {
      array.free();
    }
    return out;
  }
}
