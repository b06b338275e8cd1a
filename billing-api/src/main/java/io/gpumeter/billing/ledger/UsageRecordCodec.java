package io.gpumeter.billing.ledger;

import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.time.Instant;

/**
 * Binary form of a {@link UsageRecord} in outbox segments. Version 1 layout, big-endian, strings as
 * modified UTF-8 ({@link DataOutputStream#writeUTF}): version byte, request id, key id, account id,
 * model, timer kind, device, device name, device uuid, driver, cuda, weight policy, device ns,
 * prefill ns, decode ns, prompt tokens, completion tokens, queue ns, steps, status ordinal name,
 * started (epoch seconds, nanos), finished (epoch seconds, nanos). Version 3 (2 is taken by the
 * measured-batch frame's type byte, {@link MeasuredBatch#TYPE}) appends session id, KV byte-ns and
 * peak KV bytes; a version 1 record decodes with its request id as session and 0 for both KV
 * measures. Version 4 appends the batch company sum ({@link UsageRecord#batchCompanySum}); versions
 * 1 and 3 decode with it {@link UsageRecord#NOT_MEASURED}. A new field means a new version number;
 * readers keep decoding old versions.
 */
final class UsageRecordCodec {
  static final byte VERSION = 4;
  static final byte VERSION_3 = 3;
  private static final byte VERSION_1 = 1;

  private UsageRecordCodec() {}

  public static byte[] encode(UsageRecord r) {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream(256);
    try (DataOutputStream out = new DataOutputStream(bytes)) {
      out.writeByte(VERSION);
      out.writeUTF(r.requestId());
      out.writeLong(r.apiKeyId());
      out.writeLong(r.accountId());
      out.writeUTF(r.model());
      TimerInfo t = r.timer();
      out.writeUTF(t.timerKind());
      out.writeUTF(t.device());
      out.writeUTF(t.deviceName());
      out.writeUTF(t.deviceUuid());
      out.writeUTF(t.driverVersion());
      out.writeUTF(t.cudaVersion());
      out.writeUTF(r.weightPolicy());
      out.writeLong(r.deviceNs());
      out.writeLong(r.prefillNs());
      out.writeLong(r.decodeNs());
      out.writeInt(r.promptTokens());
      out.writeInt(r.completionTokens());
      out.writeLong(r.queueNs());
      out.writeInt(r.steps());
      out.writeUTF(r.status().name());
      out.writeLong(r.startedAt().getEpochSecond());
      out.writeInt(r.startedAt().getNano());
      out.writeLong(r.finishedAt().getEpochSecond());
      out.writeInt(r.finishedAt().getNano());
      out.writeUTF(r.sessionId());
      out.writeLong(r.kvByteNs());
      out.writeLong(r.peakKvBytes());
      out.writeLong(r.batchCompanySum());
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return bytes.toByteArray();
  }

  /**
   * @throws IOException if the bytes are not a record of a known version
   */
  public static UsageRecord decode(byte[] payload) throws IOException {
    try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(payload))) {
      byte version = in.readByte();
      if (version != VERSION && version != VERSION_3 && version != VERSION_1) {
        throw new IOException("unknown usage record version " + version);
      }
      String requestId = in.readUTF();
      long keyId = in.readLong();
      long accountId = in.readLong();
      String model = in.readUTF();
      TimerInfo timer =
          new TimerInfo(
              in.readUTF(), in.readUTF(), in.readUTF(), in.readUTF(), in.readUTF(), in.readUTF());
      String policy = in.readUTF();
      long deviceNs = in.readLong();
      long prefillNs = in.readLong();
      long decodeNs = in.readLong();
      int prompt = in.readInt();
      int completion = in.readInt();
      long queueNs = in.readLong();
      int steps = in.readInt();
      UsageStatus status = UsageStatus.valueOf(in.readUTF());
      Instant started = Instant.ofEpochSecond(in.readLong(), in.readInt());
      Instant finished = Instant.ofEpochSecond(in.readLong(), in.readInt());
      String session = requestId;
      long kvByteNs = 0;
      long peakKvBytes = 0;
      long batchCompany = UsageRecord.NOT_MEASURED;
      if (version >= VERSION_3) {
        session = in.readUTF();
        kvByteNs = in.readLong();
        peakKvBytes = in.readLong();
      }
      if (version >= VERSION) {
        batchCompany = in.readLong();
      }
      if (in.available() != 0) {
        throw new IOException("trailing bytes after usage record " + requestId);
      }
      return new UsageRecord(
          requestId,
          keyId,
          accountId,
          model,
          timer,
          policy,
          deviceNs,
          prefillNs,
          decodeNs,
          prompt,
          completion,
          queueNs,
          steps,
          status,
          started,
          finished,
          session,
          kvByteNs,
          peakKvBytes,
          batchCompany);
    } catch (IllegalArgumentException e) {
      throw new IOException("invalid usage record: " + e.getMessage(), e);
    }
  }
}
