package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.batching.SchedulerConfig;
import io.gpumeter.billing.BillingConfig;
import io.gpumeter.billing.Durability;
import io.gpumeter.server.config.ConfigLoader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ServerConfigTest {
  @TempDir Path dir;

  @Test
  void defaults() {
    ServerConfig c = ServerConfig.defaults();
    assertThat(c.host()).isEqualTo("0.0.0.0");
    assertThat(c.port()).isEqualTo(8080);
    assertThat(c.modelsDir()).isEqualTo(Path.of("./models"));
    assertThat(c.device()).isEqualTo("auto");
    assertThat(c.timer()).isEqualTo("auto");
    assertThat(c.dbUrl()).isNull();
    assertThat(c.maxBodyBytes()).isEqualTo(1024 * 1024);
    assertThat(c.maxTokensDefault()).isEqualTo(16);
    SchedulerConfig s = c.schedulerConfig();
    assertThat(s.maxRunning()).isEqualTo(32);
    assertThat(s.maxTokensPerStep()).isEqualTo(256);
    assertThat(s.prefillChunk()).isEqualTo(128);
    assertThat(s.queueCapacity()).isEqualTo(1024);
    assertThat(s.batchWindowNanos()).isZero();
    assertThat(s.defaultTimeoutNanos()).isEqualTo(300_000_000_000L);
    assertThat(s.maxQueuedPerKey()).as("a quarter of the queue").isEqualTo(256);
    assertThat(c.maxConnections()).isEqualTo(10_000);
    assertThat(c.maxConnectionsPerAddress()).isEqualTo(1_000);
    assertThat(c.idleTimeout()).isEqualTo(Duration.ofSeconds(120));
    assertThat(c.databaseConfig().isEmbedded()).isTrue();
    assertThat(c.databaseConfig().dataDirectory())
        .isEqualTo(Path.of("data", "postgres").toAbsolutePath().normalize());
  }

  @Test
  void fileThenEnvironmentThenSystemProperties() throws Exception {
    Path file = dir.resolve("gpumeter.properties");
    Files.writeString(
        file,
        "port=9000\nhost=127.0.0.1\ngpumeter.scheduler.max_running=8\n"
            + "scheduler.token_budget=64\n");
    Properties sys = new Properties();
    sys.setProperty("gpumeter.port", "9002");
    ServerConfig c =
        ServerConfig.load(
            file,
            Map.of(
                "GPUMETER_PORT",
                "9001",
                "GPUMETER_DEVICE",
                "cuda:1",
                "GPUMETER_SCHEDULER_BATCH_WINDOW",
                "500us",
                "GPUMETER_UNRELATED",
                "x"),
            sys);
    assertThat(c.port()).isEqualTo(9002);
    assertThat(c.host()).isEqualTo("127.0.0.1");
    assertThat(c.device()).isEqualTo("cuda:1");
    assertThat(c.schedulerConfig().maxRunning()).isEqualTo(8);
    assertThat(c.schedulerConfig().batchWindowNanos()).isEqualTo(500_000L);
  }

  @Test
  void queueSharePerKeyFollowsTheCapacityUnlessSet() {
    ServerConfig derived = ServerConfig.builder().set("scheduler.queue_capacity", "10").build();
    assertThat(derived.schedulerConfig().maxQueuedPerKey()).isEqualTo(3); // 10 / 4 rounded up
    ServerConfig one = ServerConfig.builder().set("scheduler.queue_capacity", "1").build();
    assertThat(one.schedulerConfig().maxQueuedPerKey()).isEqualTo(1);
    ServerConfig set =
        ServerConfig.builder()
            .set("scheduler.queue_capacity", "10")
            .set("scheduler.max_queued_per_key", "10")
            .build();
    assertThat(set.schedulerConfig().maxQueuedPerKey()).isEqualTo(10);
    assertThatThrownBy(
            () ->
                ServerConfig.builder()
                    .set("scheduler.queue_capacity", "10")
                    .set("scheduler.max_queued_per_key", "11")
                    .build())
        .hasMessageContaining("scheduler.max_queued_per_key='11'")
        .hasMessageContaining("scheduler.queue_capacity");
    assertThatThrownBy(() -> ServerConfig.builder().set("http.max_connections", "0").build())
        .hasMessageContaining("http.max_connections='0'");
    assertThatThrownBy(() -> ServerConfig.builder().set("http.idle_timeout", "0s").build())
        .hasMessageContaining("http.idle_timeout='0s'");
  }

  @Test
  void externalDatabase() throws Exception {
    ServerConfig c =
        ServerConfig.load(
            null,
            Map.of(
                "GPUMETER_DB_URL",
                "jdbc:postgresql://db:5432/gpumeter",
                "GPUMETER_DB_USER",
                "meter",
                "GPUMETER_DB_PASSWORD",
                "secret"),
            new Properties());
    assertThat(c.databaseConfig().isEmbedded()).isFalse();
    assertThat(c.databaseConfig().user()).isEqualTo("meter");
    assertThat(c.toString()).doesNotContain("secret");
  }

  @Test
  void devicesGiveEachModelItsReplicasAndBadListsAreRefusedByName() {
    ServerConfig none = ServerConfig.builder().device("cpu").build();
    assertThat(none.devicesFor("any")).containsExactly("cpu");
    ServerConfig all = ServerConfig.builder().devices("cuda:0, cuda:1").build();
    assertThat(all.devicesFor("any")).containsExactly("cuda:0", "cuda:1");
    ServerConfig mixed =
        ServerConfig.builder().devices("demo-byte-lm=cpu,cpu; all").device("cpu").build();
    assertThat(mixed.devicesFor("demo-byte-lm")).containsExactly("cpu", "cpu");
    assertThat(mixed.devicesFor("tiny-llama-bpe")).containsExactly("all");
    ServerConfig one = ServerConfig.builder().devices("demo-byte-lm=CPU").device("cpu").build();
    assertThat(one.devicesFor("demo-byte-lm")).containsExactly("cpu");
    assertThat(one.devicesFor("other")).containsExactly("cpu");
    assertThatThrownBy(() -> ServerConfig.builder().devices("cuda:0,gpu7").build())
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("devices='cuda:0,gpu7'")
        .hasMessageContaining("'gpu7' is not a device");
    assertThatThrownBy(() -> ServerConfig.builder().devices("cuda:1,cuda:1").build())
        .hasMessageContaining("cuda:1 is listed twice");
    assertThatThrownBy(() -> ServerConfig.builder().devices("cpu;cuda:0").build())
        .hasMessageContaining("two lists for every model");
    assertThatThrownBy(() -> ServerConfig.builder().devices("m=cpu;m=cpu,cpu").build())
        .hasMessageContaining("two lists for model m");
    assertThatThrownBy(() -> ServerConfig.builder().devices("cpu;;cpu").build())
        .hasMessageContaining("empty entry");
    assertThatThrownBy(() -> ServerConfig.builder().devices("=cpu").build())
        .hasMessageContaining("names no model");
    assertThatThrownBy(() -> ServerConfig.builder().devices("m=").build())
        .hasMessageContaining("'' is not a device");
  }

  @Test
  void badValuesNameKeyValueAndSource() {
    assertThatThrownBy(
            () -> ServerConfig.load(null, Map.of("GPUMETER_PORT", "70000"), new Properties()))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("port='70000'")
        .hasMessageContaining("GPUMETER_PORT");
    assertThatThrownBy(() -> ServerConfig.builder().device("gpu").build())
        .hasMessageContaining("device='gpu'");
    assertThatThrownBy(() -> ServerConfig.builder().set("timer", "cuda").build())
        .hasMessageContaining("timer='cuda'")
        .hasMessageContaining("auto or host");
    assertThatThrownBy(
            () -> ServerConfig.builder().set("scheduler.request_timeout", "soon").build())
        .hasMessageContaining("scheduler.request_timeout='soon'");
    assertThatThrownBy(() -> ServerConfig.builder().set("scheduler.max_running", "512").build())
        .hasMessageContaining("scheduler.token_budget");
    assertThatThrownBy(
            () -> ServerConfig.builder().set("completions.max_tokens_default", "2000").build())
        .hasMessageContaining("completions.max_tokens_cap");
    assertThatThrownBy(() -> ServerConfig.builder().set("db.url", "postgres://x").build())
        .hasMessageContaining("jdbc:postgresql:");
    assertThatThrownBy(() -> ServerConfig.builder().set("prot", "1"))
        .hasMessageContaining("unknown setting 'prot'");
  }

  @Test
  void ledgerOutboxRetentionAndAdminSettings() throws Exception {
    ServerConfig d = ServerConfig.builder().dataDir(Path.of("/srv/gm")).build();
    assertThat(d.durability()).isEqualTo(Durability.DURABLE);
    assertThat(d.outboxDir()).isEqualTo(Path.of("/srv/gm/outbox"));
    assertThat(d.outboxMaxBytes()).isEqualTo(1L << 30);
    assertThat(d.retention().retention()).isEqualTo(Duration.ofDays(90));
    assertThat(d.adminToken()).isNull();
    BillingConfig b = d.billingConfig();
    assertThat(b.ledger().durability()).isEqualTo(Durability.DURABLE);
    assertThat(b.ledger().outboxDirectory()).isEqualTo(Path.of("/srv/gm/outbox"));
    assertThat(b.ledger().outboxMaxBytes()).isEqualTo(1L << 30);
    assertThat(b.retention().retention()).isEqualTo(Duration.ofDays(90));
    assertThat(d.databaseConfig().attachToRunningEmbedded()).isFalse();
    assertThat(d.toolDatabaseConfig().attachToRunningEmbedded()).isTrue();

    String token = "s3cret-admin-token-0123456789";
    ServerConfig c =
        ServerConfig.load(
            null,
            Map.of(
                "GPUMETER_LEDGER_DURABILITY", "FAST",
                "GPUMETER_OUTBOX_DIR", "/var/spool/gm-outbox",
                "GPUMETER_OUTBOX_MAX_BYTES", "64m",
                "GPUMETER_RETENTION_DAYS", "400",
                "GPUMETER_ADMIN_TOKEN", token),
            new Properties());
    assertThat(c.durability()).isEqualTo(Durability.FAST);
    assertThat(c.billingConfig().ledger().durability()).isEqualTo(Durability.FAST);
    assertThat(c.billingConfig().ledger().outboxDirectory())
        .isEqualTo(Path.of("/var/spool/gm-outbox"));
    assertThat(c.outboxMaxBytes()).isEqualTo(64L << 20);
    assertThat(c.billingConfig().retention().retention()).isEqualTo(Duration.ofDays(400));
    assertThat(c.adminToken()).isEqualTo(token);
    assertThat(c.toString()).doesNotContain(token).contains("admin=on");

    assertThatThrownBy(() -> ServerConfig.builder().set("ledger.durability", "maybe").build())
        .hasMessageContaining("ledger.durability='maybe'")
        .hasMessageContaining("durable or fast");
    assertThatThrownBy(() -> ServerConfig.builder().set("outbox.max_bytes", "lots").build())
        .hasMessageContaining("outbox.max_bytes='lots'");
    assertThatThrownBy(() -> ServerConfig.builder().set("outbox.max_bytes", "1k").build())
        .hasMessageContaining("at least 4096");
    // the floor of 90 days is billing's, and the message says why
    assertThatThrownBy(() -> ServerConfig.builder().set("retention.days", "30").build())
        .hasMessageContaining("retention.days='30'")
        .hasMessageContaining("at least 90 days");
    assertThatThrownBy(() -> ServerConfig.builder().set("admin.token", "short-secret").build())
        .hasMessageContaining("admin.token")
        .hasMessageContaining("at least 16")
        .satisfies(e -> assertThat(e.getMessage()).doesNotContain("short-secret"));
  }

  @Test
  void theDatabasePasswordComesFromTheEnvironmentOrAFileNeverTheCommandLine() throws Exception {
    Map<String, String> external = Map.of("GPUMETER_DB_URL", "jdbc:postgresql://db:5432/gm");
    Properties sys = new Properties();
    sys.setProperty("gpumeter.db.password", "visible-in-ps");
    assertThatThrownBy(() -> ServerConfig.load(null, external, sys))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("-Dgpumeter.db.password is refused")
        .hasMessageContaining("GPUMETER_DB_PASSWORD")
        .hasMessageContaining("db.password_file")
        .hasMessageNotContaining("visible-in-ps");

    Path secret = dir.resolve("db.secret");
    Files.writeString(secret, "from-a-file\n");
    Properties fileOnly = new Properties();
    fileOnly.setProperty("gpumeter.db.password_file", secret.toString());
    ServerConfig fromFile = ServerConfig.load(null, external, fileOnly);
    assertThat(fromFile.databaseConfig().password()).isEqualTo("from-a-file");
    assertThat(fromFile.toString()).doesNotContain("from-a-file");

    ServerConfig fromEnv =
        ServerConfig.load(
            null,
            Map.of(
                "GPUMETER_DB_URL", "jdbc:postgresql://db:5432/gm",
                "GPUMETER_DB_PASSWORD", "from-the-env"),
            new Properties());
    assertThat(fromEnv.databaseConfig().password()).isEqualTo("from-the-env");

    assertThatThrownBy(
            () ->
                ServerConfig.load(
                    null,
                    Map.of(
                        "GPUMETER_DB_PASSWORD",
                        "a",
                        "GPUMETER_DB_PASSWORD_FILE",
                        secret.toString()),
                    new Properties()))
        .hasMessageContaining("not both");
    assertThatThrownBy(
            () ->
                ServerConfig.builder()
                    .set("db.password_file", dir.resolve("missing").toString())
                    .build())
        .hasMessageContaining("db.password_file")
        .hasMessageContaining("cannot be read");
  }

  @Test
  void anUnsafeDatabaseIsRefusedUnlessAllowed() {
    assertThat(ServerConfig.defaults().allowUnsafeDatabase()).isFalse();
    assertThat(ServerConfig.defaults().databaseConfig().allowUnsafeDatabase()).isFalse();
    ServerConfig allowed =
        ServerConfig.builder().set("ledger.allow_unsafe_database", "true").build();
    assertThat(allowed.databaseConfig().allowUnsafeDatabase()).isTrue();
    assertThat(allowed.toolDatabaseConfig().allowUnsafeDatabase()).isTrue();
    assertThat(allowed.toString()).contains("unsafe database allowed");
  }

  @Test
  void authenticationSettings() {
    ServerConfig d = ServerConfig.defaults();
    assertThat(d.keyCacheTtl()).isEqualTo(Duration.ofSeconds(10));
    assertThat(d.authMaxFailures()).isEqualTo(20);
    assertThat(d.authFailureWindow()).isEqualTo(Duration.ofSeconds(60));
    assertThat(d.billingConfig().apiKeyCache()).isEqualTo(d.apiKeyCacheConfig());
    assertThat(d.apiKeyCacheConfig().positiveTtl()).isEqualTo(Duration.ofSeconds(10));
    assertThat(d.apiKeyCacheConfig().negativeTtl()).isEqualTo(Duration.ofSeconds(5));

    ServerConfig c =
        ServerConfig.builder()
            .set("auth.key_cache_ttl", "2s")
            .set("auth.max_failures", "3")
            .set("auth.failure_window", "5m")
            .build();
    assertThat(c.billingConfig().apiKeyCache().positiveTtl()).isEqualTo(Duration.ofSeconds(2));
    assertThat(c.billingConfig().apiKeyCache().negativeTtl()).isEqualTo(Duration.ofSeconds(2));
    assertThat(c.authMaxFailures()).isEqualTo(3);
    assertThat(c.authFailureWindow()).isEqualTo(Duration.ofMinutes(5));
    // 0: no caching at all, every request asks the database
    assertThat(ServerConfig.builder().set("auth.key_cache_ttl", "0s").build().apiKeyCacheConfig())
        .extracting(a -> a.positiveTtl(), a -> a.negativeTtl())
        .containsExactly(Duration.ZERO, Duration.ZERO);

    assertThatThrownBy(() -> ServerConfig.builder().set("auth.max_failures", "0").build())
        .hasMessage("invalid setting auth.max_failures='0' (from code): must be in [1, 1000000]");
    assertThatThrownBy(() -> ServerConfig.builder().set("auth.failure_window", "10ms").build())
        .hasMessageContaining("invalid setting auth.failure_window='10ms'");
    assertThatThrownBy(() -> ServerConfig.builder().set("auth.key_cache_ttl", "soon").build())
        .hasMessageContaining("invalid setting auth.key_cache_ttl='soon'");
  }

  @Test
  void unknownKeyInFileIsRefused() throws Exception {
    Path file = dir.resolve("bad.properties");
    Files.writeString(file, "prot=9000\n");
    assertThatThrownBy(() -> ServerConfig.load(file, Map.of(), new Properties()))
        .hasMessageContaining("unknown setting 'prot'")
        .hasMessageContaining(file.toString());
  }

  @Test
  void blankUnsetsAKeyBackToItsDefault() throws Exception {
    Path file = dir.resolve("gpumeter.properties");
    Files.writeString(
        file, "db.url=jdbc:postgresql://db:5432/gpumeter\nport=9000\noutbox.dir=/srv/outbox\n");
    Properties sys = new Properties();
    sys.setProperty("gpumeter.outbox.dir", " ");
    ServerConfig c =
        ServerConfig.load(file, Map.of("GPUMETER_DB_URL", "", "GPUMETER_PORT", "  "), sys);
    assertThat(c.dbUrl()).isNull();
    assertThat(c.databaseConfig().isEmbedded()).isTrue();
    assertThat(c.port()).isEqualTo(8080);
    assertThat(c.outboxDir()).isEqualTo(Path.of("./data").resolve("outbox"));
  }

  @Test
  void everyLayerIsNamedInItsErrors() throws Exception {
    Path file = dir.resolve("gpumeter.properties");
    Files.writeString(file, "scheduler.batch_window=soon\n");
    assertThatThrownBy(() -> ServerConfig.load(file, Map.of(), new Properties()))
        .hasMessage(
            "invalid setting scheduler.batch_window='soon' (from file "
                + file
                + "): not a duration (examples: 300s, 2ms, 5m, PT5M)");
    Properties sys = new Properties();
    sys.setProperty("gpumeter.http.io_threads", "many");
    assertThatThrownBy(() -> ServerConfig.load(null, Map.of(), sys))
        .hasMessage(
            "invalid setting http.io_threads='many' (from system property"
                + " gpumeter.http.io_threads): not an integer");
    assertThatThrownBy(
            () ->
                ServerConfig.load(
                    null, Map.of("GPUMETER_OUTBOX_MAX_BYTES", "64MB"), new Properties()))
        .hasMessageStartingWith(
            "invalid setting outbox.max_bytes='64MB' (from environment variable"
                + " GPUMETER_OUTBOX_MAX_BYTES): not a size");
    assertThatThrownBy(() -> ServerConfig.builder().set("http.blocking_threads", "0").build())
        .hasMessage("invalid setting http.blocking_threads='0' (from code): must be in [1, 256]");
  }

  @Test
  void byteSizesWithBinarySuffixes() {
    assertThat(ServerConfig.builder().set("outbox.max_bytes", "64MiB").build().outboxMaxBytes())
        .isEqualTo(64L << 20);
    assertThat(ServerConfig.builder().set("outbox.max_bytes", "8k").build().outboxMaxBytes())
        .isEqualTo(8192);
    assertThat(ServerConfig.builder().set("outbox.max_bytes", "4096").build().outboxMaxBytes())
        .isEqualTo(4096);
  }

  @Test
  void everyKeyHasAnEnvironmentNameAndADocumentedDefault() throws Exception {
    assertThat(ConfigLoader.envName("models.dir")).isEqualTo("GPUMETER_MODELS_DIR");
    assertThat(ConfigLoader.envName("scheduler.max_running"))
        .isEqualTo("GPUMETER_SCHEDULER_MAX_RUNNING");
    // server/README.md's table lists every key with its environment name
    String readme = Files.readString(TestServers.repoRoot().resolve("server/README.md"));
    for (String key : ServerConfig.KEYS.keySet()) {
      assertThat(readme)
          .as(key)
          .contains("| `" + key + "` | `" + ConfigLoader.envName(key) + "` |");
    }
  }
}
