package io.gpumeter.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.gpumeter.metering.CalibratedWeightPolicy;
import io.gpumeter.metering.LinearWeightPolicy;
import io.gpumeter.metering.TimerInfo;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Instant;
import java.time.format.DateTimeParseException;
import java.time.temporal.ChronoUnit;
import java.util.Optional;

/**
 * A model directory's {@code weights.json}: the weight policy the {@code calibrate} command fitted
 * on a device, with its version, date, device and fit statistics. The server splits that model's
 * steps with it when the file is there (and with the default token weights when it is not).
 *
 * <pre>{@code
 * {"format": 2, "version": 3, "fittedAt": "2026-12-01T02:40:12Z", "model": "demo-byte-lm",
 *  "device": "cpu", "deviceName": "...", "timer": "host", "unit": "ps",
 *  "prefillPerToken": 8100, "decodePerToken": 52000, "contextPerToken": 40,
 *  "tokenContext": 3, "interceptNs": 1400000, "fixedCost": "by-weight",
 *  "fit": {"r2": 0.993, "rmsResidualNs": 90000, "points": 57, "repeats": 7}}
 * }</pre>
 *
 * <p>Format 2 added {@code tokenContext} (picoseconds per token × context position). A format-1
 * file (written before the term existed) is still read, as a policy whose tokens×context weight is
 * 0, so a model directory calibrated by an older build keeps splitting as it did.
 *
 * <p>Written to a temporary file and moved into place, so a reader never sees half a file.
 */
public final class WeightsFile {
  public static final String FILE_NAME = "weights.json";
  static final int FORMAT = 2;

  /** The oldest format this build reads (1: without {@code tokenContext}). */
  static final int OLDEST_FORMAT = 1;

  private static final ObjectMapper MAPPER =
      new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

  private WeightsFile() {}

  /**
   * A calibrated policy as read, with the device it was fitted on (a policy fitted on one device
   * says nothing about another).
   */
  public record Calibrated(CalibratedWeightPolicy policy, String device) {}

  /**
   * The calibrated policy of {@code dir}, if it has a {@code weights.json}.
   *
   * @throws ModelException if the file is there but unreadable, malformed, of another format, or
   *     holds weights a policy cannot have (negative, all zero)
   */
  public static Optional<Calibrated> read(Path dir) {
    Path file = dir.resolve(FILE_NAME);
    if (!Files.isRegularFile(file)) {
      return Optional.empty();
    }
    try {
      JsonNode root = MAPPER.readTree(Files.readString(file));
      if (root == null || !root.isObject()) {
        throw new ModelException(file + ": expected a JSON object");
      }
      int format = integer(file, root, "format");
      if (format < OLDEST_FORMAT || format > FORMAT) {
        throw new ModelException(
            file + ": format " + format + ", this build reads " + OLDEST_FORMAT + " to " + FORMAT);
      }
      if (!"ps".equals(root.path("unit").asText())) {
        throw new ModelException(file + ": field 'unit' must be \"ps\"");
      }
      LinearWeightPolicy linear =
          new LinearWeightPolicy(
              longValue(file, root, "prefillPerToken"),
              longValue(file, root, "decodePerToken"),
              longValue(file, root, "contextPerToken"),
              format >= 2 ? longValue(file, root, "tokenContext") : 0);
      return Optional.of(
          new Calibrated(
              new CalibratedWeightPolicy(
                  linear,
                  integer(file, root, "version"),
                  Instant.parse(root.path("fittedAt").asText())),
              root.path("device").asText()));
    } catch (IOException e) {
      throw new ModelException(file + ": cannot read: " + e.getMessage(), e);
    } catch (IllegalArgumentException | DateTimeParseException e) {
      throw new ModelException(file + ": " + e.getMessage(), e);
    }
  }

  /**
   * Writes {@code fit} as the next version of {@code dir}'s {@code weights.json}.
   *
   * @return the policy as written (what the server will read)
   * @throws ModelException if the file cannot be written
   */
  public static CalibratedWeightPolicy write(
      Path dir, String model, TimerInfo timer, Calibration.Fit fit, int repeats, Instant now) {
    int version = 1;
    Path file = dir.resolve(FILE_NAME);
    if (Files.isRegularFile(file)) {
      try {
        version = MAPPER.readTree(Files.readString(file)).path("version").asInt(0) + 1;
      } catch (IOException e) {
        throw new ModelException(file + ": cannot read the previous version: " + e, e);
      }
    }
    LinearWeightPolicy linear = fit.policy();
    Instant at = now.truncatedTo(ChronoUnit.SECONDS);
    ObjectNode root = MAPPER.createObjectNode();
    root.put("format", FORMAT);
    root.put("version", version);
    root.put("fittedAt", at.toString());
    root.put("model", model);
    root.put("device", timer.device());
    root.put("deviceName", timer.deviceName());
    root.put("timer", timer.timerKind());
    root.put("unit", "ps");
    root.put("prefillPerToken", linear.prefillPerToken());
    root.put("decodePerToken", linear.decodePerToken());
    root.put("contextPerToken", linear.contextPerToken());
    root.put("tokenContext", linear.tokenContext());
    root.put("interceptNs", Math.round(fit.interceptNs()));
    root.put("fixedCost", "by-weight");
    ObjectNode stats = root.putObject("fit");
    stats.put("r2", fit.r2());
    stats.put("rmsResidualNs", Math.round(fit.rmsResidualNs()));
    stats.put("points", fit.points().size());
    stats.put("repeats", repeats);
    try {
      Path tmp = Files.createTempFile(dir, FILE_NAME, ".tmp");
      Files.writeString(tmp, MAPPER.writeValueAsString(root) + "\n");
      Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    } catch (IOException e) {
      throw new ModelException(file + ": cannot write: " + e, e);
    }
    return new CalibratedWeightPolicy(linear, version, at);
  }

  private static int integer(Path file, JsonNode root, String field) {
    JsonNode n = root.get(field);
    if (n == null || !n.canConvertToInt() || !n.isIntegralNumber()) {
      throw new ModelException(file + ": field '" + field + "' must be an integer");
    }
    return n.intValue();
  }

  private static long longValue(Path file, JsonNode root, String field) {
    JsonNode n = root.get(field);
    if (n == null || !n.isIntegralNumber() || !n.canConvertToLong()) {
      throw new ModelException(file + ": field '" + field + "' must be an integer");
    }
    return n.longValue();
  }
}
