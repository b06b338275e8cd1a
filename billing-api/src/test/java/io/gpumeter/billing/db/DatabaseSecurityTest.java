package io.gpumeter.billing.db;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.BillingConfig;
import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.DatabaseDurability;
import io.gpumeter.billing.Durability;
import io.gpumeter.billing.LedgerConfig;
import io.gpumeter.billing.TestSupport;
import io.zonky.test.db.postgres.embedded.EmbeddedPostgres;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.List;
import javax.sql.DataSource;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The embedded server is durable (fsync, full_page_writes, synchronous_commit), listens on loopback
 * only, wants a scram-sha-256 password for every connection, and the server's role cannot change
 * the schema; durable mode refuses a database that is not durable unless told otherwise.
 */
class DatabaseSecurityTest {
  private static final String INSUFFICIENT_PRIVILEGE = "42501";

  @TempDir Path tmp;

  @Test
  void theEmbeddedServerIsDurableLoopbackOnlyAndWantsAPassword() throws Exception {
    Path dir = tmp.resolve("pg");
    try (Database db = Database.start(TestSupport.embedded(dir))) {
      DatabaseDurability d = db.readDurability();
      assertThat(d.fsync()).isEqualTo("on");
      assertThat(d.fullPageWrites()).isEqualTo("on");
      assertThat(d.synchronousCommit()).isEqualTo("on");
      assertThat(d.safe()).isTrue();
      assertThat(d.problems()).isEmpty();

      assertThat(show(db.dataSource(), "listen_addresses")).isEqualTo("127.0.0.1");
      // superuser-only setting
      assertThat(show(db.maintenanceDataSource(), "unix_socket_directories")).isEmpty();
      assertThat(show(db.dataSource(), "password_encryption")).isEqualTo("scram-sha-256");

      for (String file :
          List.of(EmbeddedCredentials.OWNER_PASSWORD_FILE, EmbeddedCredentials.APP_PASSWORD_FILE)) {
        Path p = dir.resolve(file);
        assertThat(p).isRegularFile();
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(p)))
            .as(file)
            .isEqualTo("rw-------");
      }
      assertThat(dir.resolveSibling("pg.initdb-password")).doesNotExist();
      List<String> hba =
          Files.readAllLines(dir.resolve("pg_hba.conf"), StandardCharsets.UTF_8).stream()
              .map(String::strip)
              .filter(l -> !l.isEmpty() && !l.startsWith("#"))
              .toList();
      assertThat(hba).isNotEmpty().allSatisfy(l -> assertThat(l).endsWith("scram-sha-256"));
      assertThat(hba).noneMatch(l -> l.contains("trust") || l.contains("replication"));

      String url = db.jdbcUrl();
      assertThat(url).startsWith("jdbc:postgresql://127.0.0.1:");
      assertRefused(url, "postgres", null);
      assertRefused(url, "postgres", "wrong");
      assertRefused(url, EmbeddedCredentials.APP, null);
      // the right password gets in, so the refusals above are about the password
      String owner = EmbeddedCredentials.read(dir.resolve(EmbeddedCredentials.OWNER_PASSWORD_FILE));
      try (Connection c = DriverManager.getConnection(url, "postgres", owner)) {
        assertThat(c.isValid(5)).isTrue();
      }
    }
  }

  @Test
  void theServersRoleReadsAndWritesRowsButCannotChangeTheSchema() throws Exception {
    try (Database db = Database.start(TestSupport.embedded(tmp.resolve("pg")))) {
      DataSource app = db.dataSource();
      assertThat(show(app, "is_superuser")).isEqualTo("off");
      try (Connection c = app.getConnection();
          Statement s = c.createStatement()) {
        try (ResultSet rs = s.executeQuery("SELECT current_user")) {
          rs.next();
          assertThat(rs.getString(1)).isEqualTo(EmbeddedCredentials.APP);
        }
        // the normal paths
        s.execute("INSERT INTO accounts (name) VALUES ('least-privilege')");
        try (ResultSet rs =
            s.executeQuery("SELECT count(*) FROM accounts WHERE name = 'least-privilege'")) {
          rs.next();
          assertThat(rs.getInt(1)).isEqualTo(1);
        }
        assertThat(s.executeUpdate("UPDATE accounts SET name = name WHERE false")).isZero();
        // the schema, the migrations' history, roles and system settings are out of reach
        for (String sql :
            List.of(
                "DROP TABLE api_keys",
                "ALTER TABLE api_keys ADD COLUMN stolen text",
                "CREATE TABLE intruder (x int)",
                "TRUNCATE usage_records",
                "UPDATE flyway_schema_history SET success = false",
                "CREATE ROLE intruder SUPERUSER",
                "ALTER SYSTEM SET fsync = off")) {
          assertThatThrownBy(() -> s.execute(sql))
              .as(sql)
              .isInstanceOf(SQLException.class)
              .satisfies(
                  e ->
                      assertThat(((SQLException) e).getSQLState())
                          .isEqualTo(INSUFFICIENT_PRIVILEGE));
        }
      }
      assertThat(show(db.maintenanceDataSource(), "is_superuser")).isEqualTo("on");
    }
  }

  @Test
  void aTrustingFolderFromAnOlderVersionGetsPasswordsAtStart() throws Exception {
    Path dir = tmp.resolve("old");
    // What older versions made: zonky's initdb (-A trust), no password anywhere.
    try (EmbeddedPostgres old = rawZonky(dir)) {
      try (Connection c =
          DriverManager.getConnection(
              "jdbc:postgresql://127.0.0.1:" + old.getPort() + "/postgres", "postgres", null)) {
        // outside schema public, which Flyway wants empty or migrated
        c.createStatement()
            .execute(
                "CREATE SCHEMA legacy; CREATE TABLE legacy.kept (x int);"
                    + " INSERT INTO legacy.kept VALUES (7)");
      }
    }
    assertThat(Files.readString(dir.resolve("pg_hba.conf"))).contains("trust");
    for (int start = 0; start < 2; start++) { // upgraded, then started as usual
      try (Database db = Database.start(TestSupport.embedded(dir))) {
        assertRefused(db.jdbcUrl(), "postgres", null);
        assertThat(dir.resolve(EmbeddedCredentials.OWNER_PASSWORD_FILE)).isRegularFile();
        assertThat(Files.readString(dir.resolve("pg_hba.conf")))
            .startsWith(EmbeddedCredentials.HBA_MARKER)
            .doesNotContain("trust");
        try (Connection c = db.maintenanceDataSource().getConnection();
            Statement s = c.createStatement();
            ResultSet rs = s.executeQuery("SELECT x FROM legacy.kept")) {
          assertThat(rs.next()).isTrue();
          assertThat(rs.getInt(1)).isEqualTo(7);
        }
        assertThat(db.readDurability().safe()).isTrue();
      }
    }
  }

  @Test
  void durableModeRefusesADatabaseWithFsyncOffUnlessExplicitlyAllowed() throws Exception {
    // An "external" database that is not durable: zonky's defaults start postgres with -F.
    try (EmbeddedPostgres unsafe = rawZonky(tmp.resolve("unsafe"))) {
      DatabaseConfig.Builder external =
          DatabaseConfig.builder()
              .jdbcUrl("jdbc:postgresql://127.0.0.1:" + unsafe.getPort() + "/postgres")
              .user("postgres")
              .dataDirectory(tmp.resolve("unused"));
      BillingConfig durable =
          BillingConfig.defaults()
              .withRetention(null)
              .withLedger(
                  LedgerConfig.defaults()
                      .withDurability(Durability.DURABLE)
                      .withOutboxDirectory(tmp.resolve("outbox")));
      BillingConfig fast = durable.withLedger(durable.ledger().withDurability(Durability.FAST));

      assertThatThrownBy(() -> Billing.start(external.build(), durable))
          .isInstanceOf(BillingException.class)
          .hasMessageContaining("refusing durable mode")
          .hasMessageContaining("fsync=off")
          .hasMessageContaining("ledger.allow_unsafe_database=true");

      try (Billing billing = Billing.start(external.build(), fast)) {
        assertThat(billing.databaseDurability().safe()).isFalse();
        // zonky's defaults: -F, and synchronous_commit=off
        assertThat(billing.databaseDurability().problems())
            .containsExactly("fsync=off", "synchronous_commit=off");
        assertThat(billing.databaseDurability().unsafeAllowed()).isFalse();
      }
      try (Billing billing = Billing.start(external.allowUnsafeDatabase(true).build(), durable)) {
        assertThat(billing.databaseDurability().fsync()).isEqualTo("off");
        assertThat(billing.databaseDurability().unsafeAllowed()).isTrue();
        assertThat(billing.health().ready()).isTrue();
      }
    }
  }

  /** zonky as older versions used it: initdb with trust, fsync off (-F), no password. */
  private static EmbeddedPostgres rawZonky(Path dir) throws Exception {
    EmbeddedPostgres.Builder b =
        EmbeddedPostgres.builder()
            .setDataDirectory(dir)
            .setCleanDataDirectory(false)
            .setRegisterShutdownHook(false)
            .setServerConfig("unix_socket_directories", "");
    if (RootSafePgBinaryResolver.runningAsRoot()) {
      b.setPgBinaryResolver(RootSafePgBinaryResolver.create(TestSupport.binaryCache()));
    }
    return b.start();
  }

  private static void assertRefused(String url, String user, String password) {
    assertThatThrownBy(
            () -> {
              try (Connection c = DriverManager.getConnection(url, user, password)) {
                c.isValid(5);
              }
            })
        .as("%s without the right password", user)
        .isInstanceOf(SQLException.class);
  }

  private static String show(DataSource ds, String setting) throws SQLException {
    try (Connection c = ds.getConnection();
        Statement s = c.createStatement();
        ResultSet rs = s.executeQuery("SHOW " + setting)) {
      rs.next();
      return rs.getString(1);
    }
  }
}
