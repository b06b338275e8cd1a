package io.gpumeter.server.faults;

import io.gpumeter.billing.db.Database;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link TwoReplicasTest}'s scenario with the replicas as separate hosts: two network namespaces
 * ({@link NetworkHosts}) joined to this one by veth pairs; PostgreSQL (embedded, owned by the test)
 * listens on the root side of host 1's pair as well as on loopback, and accepts passwords from the
 * hosts' network; each replica's JVM runs in its namespace ({@code ip netns exec}), listens on its
 * host's address, and reaches PostgreSQL through the external-database settings ({@code db.url}
 * with the veth address, {@code db.user}, {@code db.password_file}: the owner's password file),
 * never over loopback. The client (this JVM) reaches each replica at its host's address. Same
 * assertions: exactly once, exact rollups, drift 0 overall and per replica, revocation within 1 s
 * on both, and PostgreSQL saw each replica's connections come from that replica's address.
 *
 * <p>Skips, saying why, where this is not root, {@code ip} is missing, or namespaces cannot be
 * created (a container without CAP_SYS_ADMIN/CAP_NET_ADMIN). The namespaces and pairs are removed
 * afterwards, also when the scenario fails.
 */
class NetnsReplicasTest {
  @TempDir Path tmp;

  @Test
  @Timeout(360)
  void twoReplicasOnTheirOwnHostsChargeEveryAnswerOnce() throws Exception {
    String why = NetworkHosts.unavailableReason();
    Assumptions.assumeTrue(why == null, () -> "network namespaces: " + why);
    NetworkHosts net;
    try {
      net = NetworkHosts.create();
    } catch (IOException e) {
      Assumptions.abort("network namespaces cannot be created here: " + e.getMessage());
      return;
    }
    try (net) {
      int pgPort = FaultSupport.freePort();
      Path pgDir = tmp.resolve("pg");
      Database pg =
          FaultSupport.startPostgres(pgDir, pgPort, net.databaseAddress(), net.clientNetwork());
      try {
        String url = "jdbc:postgresql://" + net.databaseAddress() + ":" + pgPort + "/postgres";
        Path password = pgDir.resolve("gpumeter-owner.password");
        new TwoReplicaScenario(
                tmp,
                pg,
                new TwoReplicaScenario.Hosts() {
                  @Override
                  public String host(int replica) {
                    return net.address(replica);
                  }

                  @Override
                  public List<String> launcher(int replica) {
                    return net.launcher(replica);
                  }

                  @Override
                  public Map<String, String> database() {
                    return Map.of(
                        "db.url",
                        url,
                        "db.user",
                        "postgres",
                        "db.password_file",
                        password.toString());
                  }

                  @Override
                  public String toString() {
                    return net.toString();
                  }
                })
            .run();
      } finally {
        pg.close();
      }
    }
  }
}
