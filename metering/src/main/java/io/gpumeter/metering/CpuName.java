package io.gpumeter.metering;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** Reads the CPU model name for provenance; falls back to the JVM's architecture. */
final class CpuName {
  private CpuName() {}

  static String detect() {
    try {
      for (String line : Files.readAllLines(Path.of("/proc/cpuinfo"))) {
        if (line.startsWith("model name")) {
          int colon = line.indexOf(':');
          if (colon > 0) {
            return line.substring(colon + 1).trim();
          }
        }
      }
    } catch (IOException | RuntimeException e) {
      // not Linux or not readable: fall through
    }
    return System.getProperty("os.arch", "cpu");
  }
}
