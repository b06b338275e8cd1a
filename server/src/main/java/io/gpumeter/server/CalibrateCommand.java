package io.gpumeter.server;

import io.gpumeter.batching.SchedulerConfig;
import io.gpumeter.metering.CalibratedWeightPolicy;
import io.gpumeter.metering.StepTimerFactory;
import io.gpumeter.model.Calibration;
import io.gpumeter.model.ModelStore;
import io.gpumeter.model.ServedModel;
import io.gpumeter.model.WeightsFile;
import java.io.PrintWriter;
import java.time.Instant;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.Callable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code calibrate}: fits each model's weight policy on the configured device without serving (see
 * {@link Calibration}), prints the fit's R² and residuals, and writes it as the next version of the
 * model directory's {@code weights.json}, which the server then splits that model's steps with. The
 * models are loaded and warmed as the server would; the calibration steps are system time, charged
 * to nobody (no database is opened).
 */
@Command(
    name = "calibrate",
    mixinStandardHelpOptions = true,
    versionProvider = Main.Version.class,
    description = {
      "Fits the weight policy (prefill per token, decode per sequence, context per position,"
          + " tokens x context,"
          + " fixed cost per step) of each model on its device by least squares over designed"
          + " steps, prints R^2 and residuals, and writes <model dir>/weights.json (versioned).",
      "Run it on the machine and device that will serve, while nothing else runs on the device."
    },
    exitCodeListHeading = "%nExit status:%n",
    exitCodeList = {"0:fitted (and written)", "1:failure", "2:bad arguments or settings"})
final class CalibrateCommand implements Callable<Integer> {
  private static final Logger log = LoggerFactory.getLogger(CalibrateCommand.class);

  @Spec CommandSpec spec;

  @Mixin ConfigOption config;

  @Option(
      names = "--model",
      paramLabel = "NAME",
      description = "Calibrate only this model (default: every model in models.dir).")
  String model;

  @Option(
      names = "--repeats",
      paramLabel = "N",
      defaultValue = "7",
      description =
          "Times each designed step runs; its median is fitted (default: ${DEFAULT-VALUE}).")
  int repeats;

  @Option(
      names = "--seed",
      paramLabel = "N",
      defaultValue = "18",
      description = "Seed of the shuffled run order (default: ${DEFAULT-VALUE}).")
  long seed;

  @Option(names = "--dry-run", description = "Print the fit; do not write weights.json.")
  boolean dryRun;

  @Override
  public Integer call() throws Exception {
    if (repeats < 1 || repeats > 1000) {
      throw new ParameterException(
          spec.commandLine(), "--repeats must be between 1 and 1000, was " + repeats);
    }
    ServerConfig settings = config.load();
    PrintWriter out = spec.commandLine().getOut();
    StepTimerFactory timers =
        settings.timer().equals("host") ? StepTimerFactory.hostOnly() : StepTimerFactory.auto();
    try (ModelStore store = ModelStore.open(settings.modelsDir(), settings.device(), timers)) {
      List<ServedModel> targets =
          store.models().stream().filter(m -> model == null || m.name().equals(model)).toList();
      if (targets.isEmpty()) {
        throw new ParameterException(
            spec.commandLine(), "no model named '" + model + "' in " + settings.modelsDir());
      }
      for (ServedModel served : targets) {
        var mc = served.model().config();
        out.printf(
            "Calibrating %s on %s (%s timer), %d repeats per step...%n",
            served.name(),
            served.timer().info().device(),
            served.timer().info().timerKind(),
            repeats);
        out.flush();
        List<Calibration.Measured> points =
            Calibration.measure(
                served.model(),
                served.timer(),
                Calibration.design(mc.contextLength()),
                repeats,
                seed);
        long systemNs =
            points.stream().flatMapToLong(p -> java.util.Arrays.stream(p.samplesNs())).sum();
        Calibration.Fit fit = Calibration.fit(points);
        out.print(fit.report());
        out.printf(
            "policy: %s (picoseconds); fixed cost per step %.0f ns, shared by weight%n",
            fit.policy().describe(), fit.interceptNs());
        out.printf(
            "calibration steps took %.1f ms of device time: system time, charged to nobody%n",
            systemNs / 1e6);
        if (!dryRun) {
          CalibratedWeightPolicy written =
              WeightsFile.write(
                  mc.directory(),
                  served.name(),
                  served.timer().info(),
                  fit,
                  repeats,
                  Instant.now());
          out.printf(
              "wrote %s: %s%n", mc.directory().resolve(WeightsFile.FILE_NAME), written.describe());
        }
        out.flush();
      }
    }
    return 0;
  }

  /**
   * The scheduler settings for one served model: the calibrated policy of its directory's {@code
   * weights.json} when there is one fitted on the device it runs on, else {@code base}.
   *
   * @throws io.gpumeter.model.ModelException if the file is there but malformed
   */
  static SchedulerConfig schedulerConfigFor(ServedModel served, SchedulerConfig base) {
    Optional<WeightsFile.Calibrated> calibrated =
        WeightsFile.read(served.model().config().directory());
    if (calibrated.isEmpty()) {
      return base;
    }
    // a CPU replica (cpu:N) runs on the CPU the weights were fitted on
    String device = served.timer().info().device().replaceFirst("^cpu:[0-9]+$", "cpu");
    if (!calibrated.get().device().equals(device)) {
      log.warn(
          "{}: {} was fitted on {}, this server runs the model on {}; splitting by {} instead"
              + " (run calibrate on this device)",
          served.name(),
          WeightsFile.FILE_NAME,
          calibrated.get().device(),
          device,
          base.weightPolicy().describe());
      return base;
    }
    log.info("{}: splitting steps by {}", served.name(), calibrated.get().policy().describe());
    return base.withWeightPolicy(calibrated.get().policy());
  }
}
