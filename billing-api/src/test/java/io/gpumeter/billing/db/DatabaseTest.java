package io.gpumeter.billing.db;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.StoredUsage;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.UsageReport;
import io.gpumeter.billing.UsageTotals;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.List;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The embedded server: starts (as root too), keeps its data across restarts, migrates once. */
class DatabaseTest {
  @TempDir Path tmp;

  @Test
  void embeddedDatabaseKeepsDataAcrossRestarts() throws Exception {
    Path dataDir = tmp.resolve("data").resolve("postgres");
    DatabaseConfig cfg = TestSupport.embedded(dataDir);
    String firstUrl;
    try (Database db = Database.start(cfg)) {
      assertThat(db.isEmbedded()).isTrue();
      firstUrl = db.jdbcUrl();
      assertThat(firstUrl).startsWith("jdbc:postgresql://127.0.0.1:");
      try (Connection c = db.dataSource().getConnection();
          Statement s = c.createStatement()) {
        s.execute("INSERT INTO accounts (name) VALUES ('survivor')");
        try (ResultSet rs = s.executeQuery("SHOW synchronous_commit")) {
          rs.next();
          assertThat(rs.getString(1)).isEqualTo("on");
        }
      }
    }
    assertThat(dataDir.resolve("PG_VERSION")).exists();
    assertThat(dataDir.resolve("postmaster.pid")).doesNotExist();

    try (Database db = Database.start(cfg)) {
      try (Connection c = db.maintenanceDataSource().getConnection();
          Statement s = c.createStatement()) {
        try (ResultSet rs = s.executeQuery("SELECT name FROM accounts")) {
          assertThat(rs.next()).isTrue();
          assertThat(rs.getString(1)).isEqualTo("survivor");
          assertThat(rs.next()).isFalse();
        }
        try (ResultSet rs =
            s.executeQuery(
                "SELECT count(*) FROM flyway_schema_history WHERE success AND version IS NOT NULL")) {
          rs.next();
          assertThat(rs.getInt(1)).isEqualTo(24);
        }
      }
    }
  }

  @Test
  void keysAndChargesSurviveARestartAndARepublishIsStillOneCharge() throws Exception {
    DatabaseConfig cfg = TestSupport.embedded(tmp.resolve("billing"));
    // Recent: records older than the retention (90 days) are deleted by maintenance on start.
    java.time.Instant at =
        java.time.Instant.now()
            .truncatedTo(java.time.temporal.ChronoUnit.HOURS)
            .minus(java.time.Duration.ofHours(1))
            .plusSeconds(900);
    CreatedApiKey key;
    io.gpumeter.metering.UsageRecord r;
    try (Billing billing = Billing.start(cfg)) {
      key = billing.apiKeys().create("restart");
      r = TestSupport.record("restart-1", key.keyId(), key.accountId(), "toy", at, 600, 400, 5, 2);
      billing.ledger().publish(r).get(10, java.util.concurrent.TimeUnit.SECONDS);
    }
    try (Billing billing = Billing.start(cfg)) {
      assertThat(billing.apiKeys().authenticate(key.plaintext())).contains(key.principal());
      assertThat(billing.usage().find("restart-1")).map(StoredUsage::record).contains(r);
      billing.ledger().publish(r).get(10, java.util.concurrent.TimeUnit.SECONDS);
      assertThat(billing.ledgerStats().duplicates()).isEqualTo(1);
      assertThat(billing.usage().countForRequest("restart-1")).isEqualTo(1);
      UsageReport report = billing.usage().usage(key.keyId(), at, at);
      assertThat(report.totals()).isEqualTo(new UsageTotals(1, 1000, 600, 400, 5, 2));
    }
  }

  @Test
  void asRootTheBinariesComeFromTheRepackedArchive() throws Exception {
    Assumptions.assumeTrue(
        RootSafePgBinaryResolver.runningAsRoot(),
        "not running as root: the default zonky binaries are used, there is no repacked archive"
            + " to check");
    try (Database db = Database.start(TestSupport.embedded(tmp.resolve("pg")))) {
      long pid = Long.parseLong(Files.readAllLines(tmp.resolve("pg/postmaster.pid")).get(0).trim());
      String command = ProcessHandle.of(pid).orElseThrow().info().command().orElseThrow();
      assertThat(command).endsWith("bin/postgres.real");
      try (Connection c = db.dataSource().getConnection();
          Statement s = c.createStatement();
          ResultSet rs = s.executeQuery("SELECT 1")) {
        assertThat(rs.next()).isTrue();
      }
    }
    try (var files = Files.list(TestSupport.binaryCache())) {
      List<String> names = files.map(p -> p.getFileName().toString()).toList();
      assertThat(names).anyMatch(n -> n.matches("postgres-linux-.*-rootsafe-v1-u\\d+\\.txz"));
      assertThat(names).noneMatch(n -> n.endsWith(".tmp"));
    }
  }

  @Test
  void aSecondDatabaseOnTheSameFolderIsRefused() {
    DatabaseConfig cfg = TestSupport.embedded(tmp.resolve("shared"));
    try (Database db = Database.start(cfg)) {
      assertThat(db.isEmbedded()).isTrue();
      assertThatThrownBy(() -> Database.start(cfg))
          .isInstanceOf(IllegalStateException.class)
          .hasMessageContaining("in use");
    }
  }

  @Test
  void aToolAttachesToTheServerRunningOnTheFolderAndLeavesItRunning() throws Exception {
    Path dataDir = tmp.resolve("attach");
    DatabaseConfig cfg = TestSupport.embedded(dataDir);
    DatabaseConfig tool =
        DatabaseConfig.builder()
            .dataDirectory(dataDir)
            .binaryCacheDirectory(TestSupport.binaryCache())
            .attachToRunningEmbedded(true)
            .build();
    try (Database owner = Database.start(cfg)) {
      int port =
          Integer.parseInt(Files.readAllLines(dataDir.resolve("postmaster.pid")).get(3).trim());
      try (Database attached = Database.start(tool)) {
        assertThat(attached.isAttached()).isTrue();
        assertThat(attached.isEmbedded()).isFalse();
        assertThat(attached.jdbcUrl()).contains(":" + port + "/");
        try (Connection c = attached.dataSource().getConnection();
            Statement s = c.createStatement()) {
          s.execute("INSERT INTO accounts (name) VALUES ('via-attached')");
        }
      }
      // closing the attached one left the owner's server running
      assertThat(owner.isEmbeddedRunning()).isTrue();
      try (Connection c = owner.dataSource().getConnection();
          Statement s = c.createStatement();
          ResultSet rs =
              s.executeQuery("SELECT count(*) FROM accounts WHERE name = 'via-attached'")) {
        rs.next();
        assertThat(rs.getInt(1)).isEqualTo(1);
      }
    }
    // nobody runs it any more: the tool starts (and stops) its own server on the folder
    try (Database own = Database.start(tool)) {
      assertThat(own.isAttached()).isFalse();
      assertThat(own.isEmbedded()).isTrue();
    }
  }

  @Test
  void aPostmasterLeftRunningByAKilledProcessIsStoppedOnStart() throws Exception {
    Path dataDir = tmp.resolve("orphan");
    DatabaseConfig cfg = TestSupport.embedded(dataDir);
    Path bin;
    int port;
    try (Database db = Database.start(cfg)) {
      long pid =
          Long.parseLong(Files.readAllLines(dataDir.resolve("postmaster.pid")).get(0).trim());
      bin = Path.of(ProcessHandle.of(pid).orElseThrow().info().command().orElseThrow()).getParent();
      port = Integer.parseInt(Files.readAllLines(dataDir.resolve("postmaster.pid")).get(3).trim());
      try (Connection c = db.dataSource().getConnection();
          Statement s = c.createStatement()) {
        s.execute("INSERT INTO accounts (name) VALUES ('before-crash')");
      }
    }
    // Start a server on the folder behind the Database's back, as a killed JVM would leave it.
    Process p =
        new ProcessBuilder(
                bin.resolve("pg_ctl").toString(),
                "-D",
                dataDir.toString(),
                "-o",
                "-p " + port,
                "-w",
                "start")
            .redirectErrorStream(true)
            .redirectOutput(tmp.resolve("pg_ctl.log").toFile())
            .start();
    assertThat(p.waitFor()).as(Files.readString(tmp.resolve("pg_ctl.log"))).isZero();
    long orphan =
        Long.parseLong(Files.readAllLines(dataDir.resolve("postmaster.pid")).get(0).trim());
    assertThat(ProcessHandle.of(orphan)).isPresent();

    try (Database db = Database.start(cfg)) {
      // stopped; it may linger as a zombie until its parent (pid 1) reaps it
      assertThat(EmbeddedPostmaster.isLive(orphan)).isFalse();
      try (Connection c = db.dataSource().getConnection();
          Statement s = c.createStatement();
          ResultSet rs =
              s.executeQuery("SELECT count(*) FROM accounts WHERE name = 'before-crash'")) {
        rs.next();
        assertThat(rs.getInt(1)).isEqualTo(1);
      }
    }
  }

  @Test
  void theWatchdogRestartsAnEmbeddedServerKilledWithSigkill() throws Exception {
    DatabaseConfig cfg =
        DatabaseConfig.builder()
            .dataDirectory(tmp.resolve("watched"))
            .binaryCacheDirectory(TestSupport.binaryCache())
            .embeddedWatchdogInterval(java.time.Duration.ofMillis(200))
            .build();
    try (Database db = Database.start(cfg)) {
      try (Connection c = db.dataSource().getConnection();
          Statement s = c.createStatement()) {
        s.execute("INSERT INTO accounts (name) VALUES ('before-kill')");
      }
      long pid = db.embeddedPostmasterPid().orElseThrow();
      Process kill = new ProcessBuilder("kill", "-9", Long.toString(pid)).start();
      assertThat(kill.waitFor()).isZero();
      await("the watchdog to restart the postmaster")
          .atMost(java.time.Duration.ofSeconds(30))
          .pollInterval(java.time.Duration.ofMillis(100))
          .until(() -> db.embeddedPostmasterPid().orElse(pid) != pid && db.isEmbeddedRunning());
      // committed before the kill: back after crash recovery; the pool reconnects by itself (a
      // pooled connection of the dead server fails first, hence the retries)
      await("the row committed before the kill")
          .atMost(java.time.Duration.ofSeconds(10))
          .pollInterval(java.time.Duration.ofMillis(100))
          .ignoreExceptionsInstanceOf(java.sql.SQLException.class)
          .until(
              () -> {
                try (Connection c = db.dataSource().getConnection();
                    Statement s = c.createStatement();
                    ResultSet rs =
                        s.executeQuery(
                            "SELECT count(*) FROM accounts WHERE name = 'before-kill'")) {
                  rs.next();
                  return rs.getInt(1) == 1;
                }
              });
    }
  }

  @Test
  void configValidatesAndHidesThePassword() {
    DatabaseConfig ext = DatabaseConfig.external("jdbc:postgresql://db:5432/gm", "gm", "secret");
    assertThat(ext.isEmbedded()).isFalse();
    assertThat(ext.jdbcUrl()).isEqualTo("jdbc:postgresql://db:5432/gm");
    assertThat(ext.toString()).doesNotContain("secret");

    DatabaseConfig emb = DatabaseConfig.embedded(tmp);
    assertThat(emb.isEmbedded()).isTrue();
    assertThat(emb.dataDirectory()).isEqualTo(tmp.toAbsolutePath());
    assertThat(emb.binaryCacheDirectory()).isEqualTo(tmp.toAbsolutePath().getParent());

    assertThatThrownBy(() -> DatabaseConfig.builder().jdbcUrl("jdbc:mysql://x"))
        .hasMessageContaining("jdbc:mysql://x");
  }
}
