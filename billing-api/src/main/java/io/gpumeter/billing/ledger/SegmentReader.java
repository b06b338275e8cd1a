package io.gpumeter.billing.ledger;

import io.gpumeter.metering.UsageRecord;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.zip.CRC32C;

/** Reads the frames of one segment, skipping damage; see {@link Outbox} for the format. */
final class SegmentReader {
  private SegmentReader() {}

  record Result(
      List<UsageRecord> records,
      List<MeasuredBatch> measured,
      int corruptFrames,
      int tornTailBytes) {}

  static Result read(byte[] data) {
    ByteBuffer b = ByteBuffer.wrap(data);
    List<UsageRecord> records = new ArrayList<>();
    List<MeasuredBatch> measured = new ArrayList<>();
    int corrupt = 0;
    int torn = 0;
    int pos = 0;
    boolean inDamage = false;
    while (pos < data.length) {
      int remaining = data.length - pos;
      if (remaining < Outbox.HEADER) {
        if (!inDamage) {
          torn = remaining;
        }
        break;
      }
      int magic = b.getInt(pos);
      int len = b.getInt(pos + 4);
      if (magic == Outbox.MAGIC && len > 0 && len <= Outbox.MAX_FRAME) {
        if (pos + Outbox.HEADER + len > data.length) {
          // A frame that runs past the end: a torn tail, unless a later intact frame exists.
          int next = nextValidFrame(data, b, pos + 1);
          if (next < 0) {
            if (!inDamage) {
              torn = remaining;
            }
            break;
          }
          if (!inDamage) {
            corrupt++;
          }
          pos = next;
          inDamage = false;
          continue;
        }
        if (checksumOk(data, b, pos, len)) {
          try {
            byte[] payload =
                Arrays.copyOfRange(data, pos + Outbox.HEADER, pos + Outbox.HEADER + len);
            if (payload[0] == MeasuredBatch.TYPE) {
              measured.add(MeasuredBatch.decode(payload));
            } else {
              records.add(UsageRecordCodec.decode(payload));
            }
            pos += Outbox.HEADER + len;
            inDamage = false;
            continue;
          } catch (IOException e) {
            // checksum held but the payload is not a record: treat as damage
          }
        }
      }
      if (!inDamage) {
        corrupt++;
        inDamage = true;
      }
      int next = nextValidFrame(data, b, pos + 1);
      if (next < 0) {
        break;
      }
      pos = next;
      inDamage = false;
    }
    return new Result(records, measured, corrupt, torn);
  }

  private static boolean checksumOk(byte[] data, ByteBuffer b, int pos, int len) {
    CRC32C crc = new CRC32C();
    crc.update(data, pos + Outbox.HEADER, len);
    return (int) crc.getValue() == b.getInt(pos + 8);
  }

  /** Position of the next frame at or after {@code from} whose header and checksum hold. */
  private static int nextValidFrame(byte[] data, ByteBuffer b, int from) {
    for (int p = from; p + Outbox.HEADER <= data.length; p++) {
      if (b.getInt(p) != Outbox.MAGIC) {
        continue;
      }
      int len = b.getInt(p + 4);
      if (len > 0
          && len <= Outbox.MAX_FRAME
          && p + Outbox.HEADER + len <= data.length
          && checksumOk(data, b, p, len)) {
        return p;
      }
    }
    return -1;
  }
}
