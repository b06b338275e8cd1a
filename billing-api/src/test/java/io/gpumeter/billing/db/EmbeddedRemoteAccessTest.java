package io.gpumeter.billing.db;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.DatabaseConfig;
import io.gpumeter.billing.TestSupport;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link DatabaseConfig.Builder#embeddedRemoteAccess}: the embedded server listens on one more
 * address and lets in, with the password, only clients of the one network named; bad addresses are
 * refused when set. On loopback (127.0.0.2 as the extra address, 127.0.0.3 as the allowed client,
 * 127.0.0.4 as one outside), so it runs without root; the network-namespace test ({@code
 * NetnsReplicasTest} in server) uses it across veth pairs.
 */
class EmbeddedRemoteAccessTest {
  @TempDir Path tmp;

  @Test
  void listensOnTheExtraAddressForTheClientNetworkOnlyAndStillWantsThePassword() throws Exception {
    Path dir = tmp.resolve("pg");
    DatabaseConfig cfg =
        DatabaseConfig.builder()
            .dataDirectory(dir)
            .binaryCacheDirectory(TestSupport.binaryCache())
            .maximumPoolSize(2)
            .embeddedRemoteAccess("127.0.0.2", "127.0.0.3/32")
            .build();
    try (Database db = Database.start(cfg)) {
      assertThat(show(db, "listen_addresses")).isEqualTo("127.0.0.1,127.0.0.2");
      int port = Integer.parseInt(db.jdbcUrl().replaceAll(".*:(\\d+)/.*", "$1"));
      String remote = "jdbc:postgresql://127.0.0.2:" + port + "/postgres";
      String owner = EmbeddedCredentials.read(dir.resolve(EmbeddedCredentials.OWNER_PASSWORD_FILE));

      try (Connection c = DriverManager.getConnection(remote, from("127.0.0.3", owner))) {
        assertThat(c.isValid(5)).isTrue();
        try (Statement s = c.createStatement();
            ResultSet rs = s.executeQuery("SELECT host(inet_client_addr())")) {
          rs.next();
          assertThat(rs.getString(1)).isEqualTo("127.0.0.3");
        }
      }
      assertThatThrownBy(() -> DriverManager.getConnection(remote, from("127.0.0.3", "wrong")))
          .as("the allowed network still needs the password")
          .isInstanceOf(SQLException.class);
      assertThatThrownBy(() -> DriverManager.getConnection(remote, from("127.0.0.4", owner)))
          .as("a client outside the allowed network")
          .isInstanceOf(SQLException.class)
          .hasMessageContaining("pg_hba.conf");
    }
  }

  @Test
  void badAddressesAreRefusedWhenSet() {
    DatabaseConfig.Builder b = DatabaseConfig.builder();
    for (String[] bad :
        new String[][] {
          {"0.0.0.0", "10.0.0.0/24"},
          {"*", "10.0.0.0/24"},
          {"db.example", "10.0.0.0/24"},
          {"10.0.0.1", null},
          {null, "10.0.0.0/24"},
          {"10.0.0.256", "10.0.0.0/24"},
          {"10.0.0.1", "0.0.0.0/0"},
          {"10.0.0.1", "10.0.0.0/33"},
          {"10.0.0.1", "10.0.0.0"},
          {"10.0.0.1", "10.0.0.0/24 trust"}
        }) {
      assertThatThrownBy(() -> b.embeddedRemoteAccess(bad[0], bad[1]))
          .as("%s %s", bad[0], bad[1])
          .isInstanceOf(IllegalArgumentException.class);
    }
    DatabaseConfig ok = b.embeddedRemoteAccess("10.0.0.1", "10.0.0.0/29").build();
    assertThat(ok.embeddedListenAddress()).isEqualTo("10.0.0.1");
    assertThat(ok.embeddedClientNetwork()).isEqualTo("10.0.0.0/29");
    DatabaseConfig undone = b.embeddedRemoteAccess(null, null).build();
    assertThat(undone.embeddedListenAddress()).isNull();
    assertThat(undone.embeddedClientNetwork()).isNull();
  }

  private static Properties from(String localAddress, String password) {
    Properties p = new Properties();
    p.setProperty("user", "postgres");
    p.setProperty("password", password);
    p.setProperty("localSocketAddress", localAddress);
    p.setProperty("connectTimeout", "5");
    return p;
  }

  private static String show(Database db, String setting) throws SQLException {
    try (Connection c = db.dataSource().getConnection();
        Statement s = c.createStatement();
        ResultSet rs = s.executeQuery("SHOW " + setting)) {
      rs.next();
      return rs.getString(1);
    }
  }
}
