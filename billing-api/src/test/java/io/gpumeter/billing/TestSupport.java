package io.gpumeter.billing;

import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;

/** Shared helpers: one binary cache for the whole build, and usage records. */
public final class TestSupport {
  private TestSupport() {}

  /** Shared by all test classes so the root-safe repack is built once per build folder. */
  public static Path binaryCache() {
    return Path.of("target", "pg-binaries").toAbsolutePath();
  }

  public static DatabaseConfig embedded(Path dataDir) {
    return DatabaseConfig.builder()
        .dataDirectory(dataDir)
        .binaryCacheDirectory(binaryCache())
        .maximumPoolSize(6)
        .build();
  }

  /**
   * The password of the embedded server's owner ({@code postgres}), from its file in {@code
   * dataDir}: for tests that connect as the owner (a child process, another database).
   */
  public static String ownerPassword(Path dataDir) throws IOException {
    return Files.readString(dataDir.resolve("gpumeter-owner.password"), StandardCharsets.UTF_8)
        .strip();
  }

  public static final TimerInfo CPU = TimerInfo.cpu("test cpu");

  public static UsageRecord record(
      String requestId,
      long keyId,
      long accountId,
      String model,
      Instant finishedAt,
      long prefillNs,
      long decodeNs,
      int promptTokens,
      int completionTokens) {
    return new UsageRecord(
        requestId,
        keyId,
        accountId,
        model,
        CPU,
        "tokens",
        prefillNs + decodeNs,
        prefillNs,
        decodeNs,
        promptTokens,
        completionTokens,
        1_000,
        1 + completionTokens,
        UsageStatus.OK,
        finishedAt.minusMillis(50),
        finishedAt);
  }

  public static UsageRecord record(String requestId, long keyId, Instant finishedAt) {
    return record(requestId, keyId, 1000 + keyId, "toy", finishedAt, 700, 300, 7, 3);
  }
}
