package io.gpumeter.benchmarks;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The overload run of {@link Overload}, shortened for CI: the real server (demo model, embedded
 * PostgreSQL, durable ledger, queue of 64) offered twice its measured capacity for 10 s, open loop.
 * Admitted latency stays under the bound, every refusal is a 429/503 with {@code Retry-After}, the
 * heap after GC is flat, no charge is lost or made for a refusal, and reconciliation shows no
 * drift. The 30 s run and its figures: benchmarks/RESULTS.md, "Overload at twice capacity".
 */
class OverloadTest {

  @Test
  @Timeout(value = 10, unit = TimeUnit.MINUTES) // a cold start repacks PostgreSQL (~90 s here)
  void twiceCapacityForTenSeconds() throws Exception {
    Path target = Path.of("target").toAbsolutePath();
    Overload.Settings settings =
        new Overload.Settings(
            repoRoot().resolve("models"),
            target.resolve("test-data").resolve("overload-" + System.nanoTime()),
            16,
            0.8,
            64,
            2.0,
            Duration.ofSeconds(3),
            Duration.ofSeconds(3),
            Duration.ofSeconds(5),
            Duration.ofSeconds(10),
            32,
            3.0,
            0.10,
            Map.of(
                "db.binary_cache_dir",
                target.resolve("pg-binaries").toString(),
                "shutdown.grace",
                "10s"));

    Overload.Report r = new Overload(settings).run();

    assertThat(r.violations()).as(r.text()).isEmpty();
    // the same properties one by one, so a failure names the one that broke
    assertThat(r.rejected()).as("refused: the server was overloaded").isPositive();
    assertThat(r.admitted()).as("admitted").isPositive();
    assertThat(r.rejectedWithoutRetryAfter()).as("refusals without Retry-After").isZero();
    assertThat(r.otherStatus()).as("answers neither 200 nor 429/503").isZero();
    assertThat(r.dropped()).as("requests without a response").isZero();
    assertThat(r.overloadP50Ns()).as("admitted p50 (ns)").isLessThanOrEqualTo(r.latencyBoundNs());
    assertThat(r.overloadP99Ns()).as("admitted p99 (ns)").isLessThanOrEqualTo(r.latencyBoundNs());
    assertThat(Math.abs(r.heapChange())).as("heap after GC, relative change").isLessThan(0.10);
    assertThat(r.chargesChecked()).as("200s looked up in the ledger").isEqualTo(r.admitted());
    assertThat(r.chargesMissing() + r.chargesDuplicated() + r.chargesWrongDeviceTime())
        .as("200s without exactly one stored charge of the answered device time")
        .isZero();
    assertThat(r.chargedRefusals()).as("refusals with a stored charge").isZero();
    assertThat(r.keysWithWrongTotals()).as("keys whose ledger totals differ").isZero();
    assertThat(r.driftNs()).as("reconciliation drift (ns)").isZero();
    assertThat(r.reconcileExact()).as("reconciliation exact").isTrue();
    assertThat(r.reconcileBalanced()).as("reconciliation balanced").isTrue();
  }

  /** The repository root: the first directory upwards holding both mvnw and models/. */
  static Path repoRoot() {
    Path dir = Path.of("").toAbsolutePath();
    while (dir != null) {
      if (Files.isDirectory(dir.resolve("models")) && Files.exists(dir.resolve("mvnw"))) {
        return dir;
      }
      dir = dir.getParent();
    }
    throw new IllegalStateException("no models/ found above " + Path.of("").toAbsolutePath());
  }
}
