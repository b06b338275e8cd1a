package io.gpumeter.server;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * The {@code --config FILE} option every command takes, as a picocli mixin; mix it in as a field
 * named {@code config} ({@code @Mixin ConfigOption config;}). Given after a command it wins; else
 * one given before the command applies ({@code --config f create-key ...}), so a command at any
 * depth sees the nearest one.
 */
final class ConfigOption {
  /** The name of the mixin field in each command, through which parents are searched. */
  private static final String MIXIN_NAME = "config";

  @Spec(Spec.Target.MIXEE)
  private CommandSpec mixee;

  @Option(
      names = "--config",
      paramLabel = "FILE",
      description =
          "Properties file with settings (keys: server/README.md); GPUMETER_* variables"
              + " and -Dgpumeter.* properties override it.")
  private Path file;

  /** The nearest {@code --config} on this command or a parent, or null. */
  Path file() {
    for (CommandSpec s = mixee; s != null; s = s.parent()) {
      CommandSpec mixin = s.mixins().get(MIXIN_NAME);
      if (mixin != null && mixin.userObject() instanceof ConfigOption o && o.file != null) {
        return o.file;
      }
    }
    return null;
  }

  /**
   * Loads the settings: defaults, the file, the environment, then system properties.
   *
   * @throws ParameterException if the file does not exist (exit status 2)
   * @throws IllegalArgumentException naming key, value and source of a bad setting
   * @throws IOException if the file cannot be read
   */
  ServerConfig load() throws IOException {
    Path f = file();
    if (f != null && !Files.isRegularFile(f)) {
      throw new ParameterException(mixee.commandLine(), "config file " + f + " does not exist");
    }
    return ServerConfig.load(f);
  }
}
