package io.gpumeter.metering.cuda;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import jcuda.driver.CUresult;

/** Formatting of driver answers for {@link io.gpumeter.metering.TimerInfo}, and version lookup. */
final class CudaFormat {
  /** System property naming the CUDA runtime version when it cannot be detected. */
  static final String RUNTIME_VERSION_PROPERTY = "gpumeter.cuda.runtimeVersion";

  // libcudart.so.12.8.90, libcudart.so.13, libcudart-9335f6a2.so.12 (DJL's CUDA libtorch bundle)
  private static final Pattern CUDART =
      Pattern.compile("libcudart(?:-[0-9a-f]+)?\\.so\\.(\\d+)(?:\\.(\\d+))?");
  private static final Pattern FLAVOR = Pattern.compile("cu(\\d{2,3})(?:-precxx11)?");

  private CudaFormat() {}

  /** {@code cuDriverGetVersion}'s 13000 as {@code 13.0}, 12060 as {@code 12.6}. */
  static String version(int encoded) {
    if (encoded <= 0) {
      return "";
    }
    return (encoded / 1000) + "." + (encoded % 1000) / 10;
  }

  /** A 16-byte UUID as nvidia-smi prints it: {@code GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}. */
  static String gpuUuid(byte[] bytes) {
    if (bytes == null || bytes.length != 16) {
      return "";
    }
    StringBuilder sb = new StringBuilder("GPU-");
    for (int i = 0; i < 16; i++) {
      if (i == 4 || i == 6 || i == 8 || i == 10) {
        sb.append('-');
      }
      sb.append(String.format(Locale.ROOT, "%02x", bytes[i] & 0xff));
    }
    return sb.toString();
  }

  /** A NUL-terminated C string from {@code cuDeviceGetName}. */
  static String cString(byte[] bytes) {
    int n = 0;
    while (n < bytes.length && bytes[n] != 0) {
      n++;
    }
    return new String(bytes, 0, n, StandardCharsets.UTF_8).trim();
  }

  static String resultName(int result) {
    try {
      return CUresult.stringFor(result);
    } catch (RuntimeException | LinkageError e) {
      return "CUresult " + result;
    }
  }

  /**
   * The CUDA runtime version the process's libtorch runs on, best effort: the system property
   * {@value #RUNTIME_VERSION_PROPERTY} if set; else the version in the file name of a {@code
   * libcudart} mapped into this process (present once libtorch has initialised CUDA); else the
   * {@code PYTORCH_FLAVOR} DJL was told ({@code cu128} gives {@code 12.8}); else empty.
   */
  static String runtimeVersion() {
    String configured = System.getProperty(RUNTIME_VERSION_PROPERTY, "").trim();
    if (!configured.isEmpty()) {
      return configured;
    }
    String mapped = mappedCudart(Path.of("/proc/self/maps"));
    if (!mapped.isEmpty()) {
      return mapped;
    }
    return fromFlavor(System.getenv("PYTORCH_FLAVOR"));
  }

  static String mappedCudart(Path maps) {
    try {
      List<String> lines = Files.readAllLines(maps);
      for (String line : lines) {
        String v = cudartVersion(line);
        if (!v.isEmpty()) {
          return v;
        }
      }
    } catch (IOException | RuntimeException e) {
      // not Linux, or not readable: unknown
    }
    return "";
  }

  static String cudartVersion(String pathOrLine) {
    Matcher m = CUDART.matcher(pathOrLine);
    if (!m.find()) {
      return "";
    }
    return m.group(2) == null ? m.group(1) : m.group(1) + "." + m.group(2);
  }

  static String fromFlavor(String flavor) {
    if (flavor == null) {
      return "";
    }
    Matcher m = FLAVOR.matcher(flavor.trim());
    if (!m.matches()) {
      return "";
    }
    String digits = m.group(1);
    return digits.substring(0, digits.length() - 1) + "." + digits.charAt(digits.length() - 1);
  }
}
