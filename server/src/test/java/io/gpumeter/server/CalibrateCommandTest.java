package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.batching.SchedulerConfig;
import io.gpumeter.metering.StepTimerFactory;
import io.gpumeter.model.ModelStore;
import io.gpumeter.model.ServedModel;
import io.gpumeter.model.WeightsFile;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** The calibrate command on the real demo model, and the server picking its file up. */
@Timeout(1200) // three model loads and two calibrations; 520 s at load average 25
class CalibrateCommandTest {
  @TempDir Path tmp;

  /** A copy of models/ (the demo model's files), so the test writes no weights.json into it. */
  private Path modelsCopy() throws IOException {
    Path src = TestServers.repoRoot().resolve("models").resolve("demo-byte-lm");
    Path dst = tmp.resolve("models").resolve("demo-byte-lm");
    Files.createDirectories(dst);
    try (Stream<Path> files = Files.list(src)) {
      for (Path f : files.filter(Files::isRegularFile).toList()) {
        if (!f.getFileName().toString().equals(WeightsFile.FILE_NAME)) {
          Files.copy(f, dst.resolve(f.getFileName()));
        }
      }
    }
    return dst.getParent();
  }

  @Test
  void calibratePrintsTheFitWritesAVersionedFileAndTheServerSplitsByIt() throws Exception {
    Path models = modelsCopy();
    Path props = tmp.resolve("gpumeter.properties");
    Files.writeString(
        props, "models.dir=" + models + "\ndevice=cpu\ntimer=host\ndata.dir=" + tmp + "\n");
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int status =
        Main.run(
            new String[] {"calibrate", "--config", props.toString(), "--repeats", "1"},
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8));
    String text = out.toString(StandardCharsets.UTF_8);
    assertThat(status).as(text + err).isZero();
    assertThat(text)
        .contains("R^2 = ")
        .contains("resid_%")
        .contains("shared by weight")
        .contains("system time, charged to nobody")
        .contains("wrote ");
    Path dir = models.resolve("demo-byte-lm");
    WeightsFile.Calibrated written = WeightsFile.read(dir).orElseThrow();
    assertThat(written.policy().version()).isEqualTo(1);
    assertThat(written.device()).isEqualTo("cpu");

    // The server's scheduler for that model splits by the file's policy, named with its version.
    try (ModelStore store = ModelStore.open(models, "cpu", StepTimerFactory.hostOnly())) {
      ServedModel served = store.models().get(0);
      SchedulerConfig config =
          CalibrateCommand.schedulerConfigFor(served, SchedulerConfig.defaults());
      assertThat(config.weightPolicy()).isEqualTo(written.policy());
      assertThat(config.weightPolicy().describe()).startsWith("calibrated(v=1,");
    }

    // --dry-run prints but does not write; an unknown model is a usage error.
    ByteArrayOutputStream dry = new ByteArrayOutputStream();
    assertThat(
            Main.run(
                new String[] {
                  "calibrate", "--config", props.toString(), "--repeats", "1", "--dry-run"
                },
                new PrintStream(dry, true, StandardCharsets.UTF_8),
                new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8)))
        .isZero();
    assertThat(WeightsFile.read(dir).orElseThrow().policy().version()).isEqualTo(1);
    assertThat(
            Main.run(
                new String[] {"calibrate", "--config", props.toString(), "--model", "nope"},
                new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8),
                new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8)))
        .isEqualTo(2);
  }
}
