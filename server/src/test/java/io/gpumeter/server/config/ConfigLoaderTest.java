package io.gpumeter.server.config;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ConfigLoaderTest {
  private static final Map<String, String> DEFAULTS = new LinkedHashMap<>();

  static {
    DEFAULTS.put("a", "default-a");
    DEFAULTS.put("b", "default-b");
    DEFAULTS.put("c", "default-c");
    DEFAULTS.put("d", "default-d");
    DEFAULTS.put("opt.key", "");
  }

  @TempDir Path dir;

  @Test
  void fourLayersLaterWins() throws Exception {
    Path file = dir.resolve("x.properties");
    Files.writeString(file, "b=file-b\nc=file-c\ngpumeter.d=file-d\n");
    Properties sys = new Properties();
    sys.setProperty("gpumeter.d", "sys-d");
    sys.setProperty("gpumeter.unknown", "ignored");
    ConfigValues v =
        ConfigLoader.load(
            DEFAULTS,
            file,
            Map.of("GPUMETER_C", "env-c", "GPUMETER_D", "env-d", "GPUMETER_OTHER", "ignored"),
            sys);
    assertThat(v.text("a")).isEqualTo("default-a");
    assertThat(v.get("a").source()).isEqualTo(ConfigSource.defaultValue());
    assertThat(v.text("b")).isEqualTo("file-b");
    assertThat(v.get("b").source()).isEqualTo(ConfigSource.file(file));
    assertThat(v.text("c")).isEqualTo("env-c");
    assertThat(v.get("c").source().toString()).isEqualTo("environment variable GPUMETER_C");
    assertThat(v.text("d")).isEqualTo("sys-d");
    assertThat(v.get("d").source().toString()).isEqualTo("system property gpumeter.d");
    assertThat(v.asMap()).containsOnlyKeys(DEFAULTS.keySet());
  }

  @Test
  void blankInALaterLayerUnsetsTheKey() throws Exception {
    Path file = dir.resolve("x.properties");
    Files.writeString(file, "opt.key=from-file\na=file-a\n");
    ConfigValues v =
        ConfigLoader.load(
            DEFAULTS, file, Map.of("GPUMETER_OPT_KEY", "  ", "GPUMETER_A", ""), new Properties());
    assertThat(v.optional("opt.key")).isNull();
    assertThat(v.text("a")).isEqualTo("default-a");
    assertThat(v.get("a").source()).isEqualTo(ConfigSource.environment("GPUMETER_A"));
    assertThat(
            ConfigLoader.withDefaults(DEFAULTS)
                .set("opt.key", " x ", ConfigSource.code())
                .values()
                .optional("opt.key"))
        .isEqualTo("x");
  }

  @Test
  void unknownKeysInTheFileOrFromCodeAreRefused() throws Exception {
    Path file = dir.resolve("typo.properties");
    Files.writeString(file, "aa=1\n");
    assertThatThrownBy(() -> ConfigLoader.load(DEFAULTS, file, Map.of(), new Properties()))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("unknown setting 'aa'")
        .hasMessageContaining(file.toString());
    assertThatThrownBy(() -> ConfigLoader.withDefaults(DEFAULTS).set("e", "1", ConfigSource.code()))
        .hasMessageContaining("unknown setting 'e'");
  }

  @Test
  void integersWithRanges() {
    ConfigValues v = values("a", " 42 ");
    assertThat(v.intIn("a", 0, 100)).isEqualTo(42);
    assertThat(v.longIn("a", 42, 42)).isEqualTo(42L);
    assertThatThrownBy(() -> v.intIn("a", 0, 41))
        .hasMessage("invalid setting a=' 42 ' (from code): must be in [0, 41]");
    assertThatThrownBy(() -> values("a", "4.2").longIn("a", 0, 100))
        .hasMessage("invalid setting a='4.2' (from code): not an integer");
    assertThatThrownBy(() -> values("a", "99999999999999999999").longIn("a", 0, Long.MAX_VALUE))
        .hasMessageContaining("not an integer");
  }

  @Test
  void byteSizes() {
    assertThat(ConfigValues.parseBytes("1073741824")).isEqualTo(1073741824L);
    assertThat(ConfigValues.parseBytes("512b")).isEqualTo(512L);
    assertThat(ConfigValues.parseBytes("4k")).isEqualTo(4096L);
    assertThat(ConfigValues.parseBytes("4KiB")).isEqualTo(4096L);
    assertThat(ConfigValues.parseBytes("512m")).isEqualTo(512L << 20);
    assertThat(ConfigValues.parseBytes("64MiB")).isEqualTo(64L << 20);
    assertThat(ConfigValues.parseBytes("64 mib")).isEqualTo(64L << 20);
    assertThat(ConfigValues.parseBytes("1g")).isEqualTo(1L << 30);
    assertThat(ConfigValues.parseBytes("2GiB")).isEqualTo(2L << 30);
    assertThat(ConfigValues.parseBytes("3TiB")).isEqualTo(3L << 40);
    // SI-looking suffixes are ambiguous: refused rather than guessed
    assertThatThrownBy(() -> ConfigValues.parseBytes("64MB"))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> ConfigValues.parseBytes("-1"))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> ConfigValues.parseBytes("9000000TiB"))
        .isInstanceOf(IllegalArgumentException.class);
    assertThat(values("a", "8k").bytes("a", 4096)).isEqualTo(8192L);
    assertThatThrownBy(() -> values("a", "1k").bytes("a", 4096))
        .hasMessage("invalid setting a='1k' (from code): must be at least 4096 bytes");
    assertThatThrownBy(() -> values("a", "lots").bytes("a", 0))
        .hasMessageStartingWith("invalid setting a='lots' (from code): not a size");
  }

  @Test
  void durations() {
    assertThat(ConfigValues.parseDuration("300s")).isEqualTo(Duration.ofSeconds(300));
    assertThat(ConfigValues.parseDuration("2ms")).isEqualTo(Duration.ofMillis(2));
    assertThat(ConfigValues.parseDuration("500us")).isEqualTo(Duration.ofNanos(500_000));
    assertThat(ConfigValues.parseDuration("10ns")).isEqualTo(Duration.ofNanos(10));
    assertThat(ConfigValues.parseDuration("250")).isEqualTo(Duration.ofMillis(250));
    assertThat(ConfigValues.parseDuration("5m")).isEqualTo(Duration.ofMinutes(5));
    assertThat(ConfigValues.parseDuration("1H")).isEqualTo(Duration.ofHours(1));
    assertThat(ConfigValues.parseDuration("PT1H")).isEqualTo(Duration.ofHours(1));
    assertThat(ConfigValues.parseDuration("pt5m")).isEqualTo(Duration.ofMinutes(5));
    assertThatThrownBy(() -> ConfigValues.parseDuration("5 parsecs"))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> ConfigValues.parseDuration("PTsoon"))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> ConfigValues.parseDuration("99999999999999999999h"))
        .isInstanceOf(IllegalArgumentException.class);
    assertThat(values("a", "2ms").duration("a", Duration.ZERO)).isEqualTo(Duration.ofMillis(2));
    assertThatThrownBy(() -> values("a", "0s").duration("a", Duration.ofMillis(1)))
        .hasMessage("invalid setting a='0s' (from code): must be at least PT0.001S");
  }

  @Test
  void booleans() {
    for (String t : new String[] {"true", "TRUE", "yes", "on", " On "}) {
      assertThat(values("a", t).bool("a")).as(t).isTrue();
    }
    for (String f : new String[] {"false", "False", "no", "off"}) {
      assertThat(values("a", f).bool("a")).as(f).isFalse();
    }
    assertThatThrownBy(() -> values("a", "1").bool("a"))
        .hasMessage(
            "invalid setting a='1' (from code): not a boolean (true/false, yes/no, on/off)");
  }

  @Test
  void blankToNull() {
    assertThat(ConfigValues.blankToNull(null)).isNull();
    assertThat(ConfigValues.blankToNull(" \t")).isNull();
    assertThat(ConfigValues.blankToNull(" x ")).isEqualTo("x");
  }

  @Test
  void customParseErrorsAndSecretsNameKeyAndSource() {
    ConfigValues v = values("a", "hunter2");
    assertThatThrownBy(
            () ->
                v.parse(
                    "a",
                    s -> {
                      throw new IllegalArgumentException("must be durable or fast");
                    }))
        .hasMessage("invalid setting a='hunter2' (from code): must be durable or fast");
    assertThat(v.invalidSecret("a", "too short").getMessage())
        .isEqualTo("invalid setting a (from code): too short")
        .doesNotContain("hunter2");
  }

  private static ConfigValues values(String key, String text) {
    return ConfigLoader.withDefaults(DEFAULTS).set(key, text, ConfigSource.code()).values();
  }
}
