package io.gpumeter.billing.pricing;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.db.Database;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link DeviceClasses} (which prices receipts) gives the class the SQL function {@code
 * device_class} (which prices the stored charge) gives, on real device names, edge cases and random
 * strings, against the real embedded PostgreSQL.
 */
class DeviceClassesTest {
  @TempDir static Path tmp;
  static Database db;

  @BeforeAll
  static void start() {
    db = Database.start(TestSupport.embedded(tmp.resolve("pg")));
  }

  @AfterAll
  static void stop() {
    db.close();
  }

  @Test
  void javaAndSqlGiveTheSameClass() throws Exception {
    List<String[]> cases = new ArrayList<>();
    for (String[] c :
        new String[][] {
          {"cpu", "cpu"},
          {"cpu", "Intel(R) Xeon(R)"},
          {"cpu:0", "AMD EPYC"},
          {"cpu:12", "Intel(R) Xeon(R)"},
          {"cpu:x", "AMD EPYC"},
          {"cuda:0", "NVIDIA H100 80GB HBM3"},
          {"cuda:1", "NVIDIA H200"},
          {"cuda:0", "NVIDIA A100-SXM4-40GB"},
          {"cuda:0", "Tesla V100-PCIE-16GB HBM2"},
          {"cuda:0", "AMD Instinct MI300X HBM3E"},
          {"cuda:0", "hbm3"},
          {"CUDA", "---"},
          {"cuda:0", ""},
          {"mps", "Apple M2 Max"},
          {"cuda:0", "  NVIDIA__GeForce  RTX 4090  "},
        }) {
      cases.add(c);
    }
    Random random = new Random(11);
    String alphabet = "aAbBhHmM019 -_:./()e3";
    for (int i = 0; i < 300; i++) {
      StringBuilder sb = new StringBuilder();
      int n = random.nextInt(24);
      for (int j = 0; j < n; j++) {
        sb.append(alphabet.charAt(random.nextInt(alphabet.length())));
      }
      cases.add(new String[] {random.nextBoolean() ? "cuda:0" : "Gpu", sb.toString()});
    }
    try (Connection c = db.dataSource().getConnection();
        PreparedStatement ps = c.prepareStatement("SELECT device_class(?, ?)")) {
      for (String[] k : cases) {
        ps.setString(1, k[0]);
        ps.setString(2, k[1]);
        try (ResultSet rs = ps.executeQuery()) {
          rs.next();
          assertThat(DeviceClasses.of(k[0], k[1]))
              .as("device %s, name '%s'", k[0], k[1])
              .isEqualTo(rs.getString(1));
        }
      }
    }
    assertThat(DeviceClasses.of("cuda:0", "NVIDIA H100 80GB HBM3")).isEqualTo("nvidia-h100-80gb");
    assertThat(DeviceClasses.of("cuda:0", null)).isNull();
    // a CPU replica (several devices per model, V15) is priced as the class cpu
    assertThat(DeviceClasses.of("cpu:1", "AMD EPYC")).isEqualTo("cpu");
  }
}
