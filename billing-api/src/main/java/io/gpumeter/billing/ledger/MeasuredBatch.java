package io.gpumeter.billing.ledger;

import io.gpumeter.billing.MeasuredDelta;
import io.gpumeter.metering.UsageRecord;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.TreeMap;
import java.util.UUID;

/**
 * The measured side of one ledger batch: the measured-time deltas taken from the recorder when the
 * batch was written, and this process's accrual (step time handed out as shares vs. device time of
 * the usage records made durable, per model and device). Written in the same transaction as the
 * batch's records, or appended to the outbox in the same fsynced group; idempotent on {@link
 * #batchId()} (claimed in {@code measured_batches}), so a replay or a retry adds it once.
 *
 * <p>Outbox payload (big-endian): {@code [type byte 2][batch id][instance id][owner id] [n deltas ×
 * (minute, model, device, measured, charged, system, steps)] [m accruals × (model, device, accrued,
 * recorded, last minute)]}; the type byte never equals {@link UsageRecordCodec#VERSION}, so a
 * reader tells the two payloads apart by their first byte.
 *
 * @param ownerId the outbox directory's owner (stable across restarts of the same server)
 * @param instanceId the process that measured it (a new id at each start)
 */
public record MeasuredBatch(
    UUID batchId,
    UUID instanceId,
    UUID ownerId,
    List<MeasuredDelta> deltas,
    List<Accrual> accruals) {
  static final byte TYPE = 2;

  /**
   * What one process handed out and recorded for one model on one device in this batch.
   *
   * @param accruedNs step time handed out as shares (Σ charged of the deltas)
   * @param recordedNs device time of the usage records made durable with this batch
   * @param lastMinute the latest minute (epoch minutes) of those deltas and records
   */
  public record Accrual(
      String model, String device, long accruedNs, long recordedNs, long lastMinute) {}

  public MeasuredBatch {
    Objects.requireNonNull(batchId, "batchId");
    Objects.requireNonNull(instanceId, "instanceId");
    Objects.requireNonNull(ownerId, "ownerId");
    deltas = List.copyOf(deltas);
    accruals = List.copyOf(accruals);
  }

  /**
   * The measured side of a batch of {@code records} with {@code deltas} taken for it, under a new
   * batch id; null when both are empty (nothing to make durable).
   */
  public static MeasuredBatch of(
      UUID ownerId, UUID instanceId, List<MeasuredDelta> deltas, List<UsageRecord> records) {
    if (deltas.isEmpty() && records.isEmpty()) {
      return null;
    }
    TreeMap<String, long[]> byKey = new TreeMap<>();
    for (MeasuredDelta d : deltas) {
      long[] a = byKey.computeIfAbsent(key(d.model(), d.device()), k -> new long[] {0, 0, 0});
      a[0] += d.chargedNs();
      a[2] = Math.max(a[2], d.minute());
    }
    for (UsageRecord r : records) {
      long[] a =
          byKey.computeIfAbsent(key(r.model(), r.timer().device()), k -> new long[] {0, 0, 0});
      a[1] += r.deviceNs();
      a[2] = Math.max(a[2], Math.floorDiv(r.finishedAt().getEpochSecond(), 60));
    }
    List<Accrual> accruals = new ArrayList<>(byKey.size());
    byKey.forEach(
        (k, a) -> {
          int sep = k.indexOf('\u0000');
          accruals.add(new Accrual(k.substring(0, sep), k.substring(sep + 1), a[0], a[1], a[2]));
        });
    return new MeasuredBatch(UUID.randomUUID(), instanceId, ownerId, deltas, accruals);
  }

  private static String key(String model, String device) {
    return model + '\u0000' + device;
  }

  byte[] encode() {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream(64 + 64 * deltas.size());
    try (DataOutputStream out = new DataOutputStream(bytes)) {
      out.writeByte(TYPE);
      uuid(out, batchId);
      uuid(out, instanceId);
      uuid(out, ownerId);
      out.writeInt(deltas.size());
      for (MeasuredDelta d : deltas) {
        out.writeLong(d.minute());
        out.writeUTF(d.model());
        out.writeUTF(d.device());
        out.writeLong(d.measuredNs());
        out.writeLong(d.chargedNs());
        out.writeLong(d.systemNs());
        out.writeLong(d.steps());
      }
      out.writeInt(accruals.size());
      for (Accrual a : accruals) {
        out.writeUTF(a.model());
        out.writeUTF(a.device());
        out.writeLong(a.accruedNs());
        out.writeLong(a.recordedNs());
        out.writeLong(a.lastMinute());
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return bytes.toByteArray();
  }

  /**
   * @throws IOException if the bytes are not a measured batch
   */
  static MeasuredBatch decode(byte[] payload) throws IOException {
    try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(payload))) {
      byte type = in.readByte();
      if (type != TYPE) {
        throw new IOException("not a measured batch: type " + type);
      }
      UUID batch = new UUID(in.readLong(), in.readLong());
      UUID instance = new UUID(in.readLong(), in.readLong());
      UUID owner = new UUID(in.readLong(), in.readLong());
      int n = in.readInt();
      if (n < 0 || n > payload.length) {
        throw new IOException("bad delta count " + n);
      }
      List<MeasuredDelta> deltas = new ArrayList<>(n);
      for (int i = 0; i < n; i++) {
        deltas.add(
            new MeasuredDelta(
                in.readLong(),
                in.readUTF(),
                in.readUTF(),
                in.readLong(),
                in.readLong(),
                in.readLong(),
                in.readLong()));
      }
      int m = in.readInt();
      if (m < 0 || m > payload.length) {
        throw new IOException("bad accrual count " + m);
      }
      List<Accrual> accruals = new ArrayList<>(m);
      for (int i = 0; i < m; i++) {
        accruals.add(
            new Accrual(in.readUTF(), in.readUTF(), in.readLong(), in.readLong(), in.readLong()));
      }
      if (in.available() != 0) {
        throw new IOException("trailing bytes after measured batch " + batch);
      }
      return new MeasuredBatch(batch, instance, owner, deltas, accruals);
    } catch (IllegalArgumentException e) {
      throw new IOException("invalid measured batch: " + e.getMessage(), e);
    }
  }

  private static void uuid(DataOutputStream out, UUID id) throws IOException {
    out.writeLong(id.getMostSignificantBits());
    out.writeLong(id.getLeastSignificantBits());
  }
}
