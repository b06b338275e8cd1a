package io.gpumeter.billing.usage;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.HourlyUsage;
import io.gpumeter.billing.TestSupport;
import io.gpumeter.billing.UsageReport;
import io.gpumeter.billing.UsageTotals;
import io.gpumeter.metering.UsageRecord;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Reports through the facade: each key sees only its own usage, by whole UTC hours. */
class UsageQueriesTest {
  @TempDir static Path tmp;
  static Billing billing;
  static CreatedApiKey alice;
  static CreatedApiKey bob;

  static final Instant H10 = Instant.parse("2026-03-01T10:00:00Z");
  static final Instant H11 = H10.plus(Duration.ofHours(1));
  static final Instant H12 = H10.plus(Duration.ofHours(2));

  @BeforeAll
  static void start() throws Exception {
    billing = Billing.start(TestSupport.embedded(tmp.resolve("pg")));
    alice = billing.apiKeys().create("alice");
    bob = billing.apiKeys().create("bob");
    List<CompletableFuture<Void>> fs = new ArrayList<>();
    // alice: 10:xx two toy + one big, 11:xx one toy, 12:xx one toy
    fs.add(publish("a1", alice, "toy", H10.plusSeconds(1), 100, 10, 5, 1));
    fs.add(publish("a2", alice, "toy", H10.plusSeconds(3599), 200, 20, 6, 2));
    fs.add(publish("a3", alice, "big", H10.plusSeconds(60), 1000, 100, 7, 3));
    fs.add(publish("a4", alice, "toy", H11, 300, 30, 8, 4));
    fs.add(publish("a5", alice, "toy", H12.plusSeconds(10), 400, 40, 9, 5));
    // bob: same hours, different numbers
    fs.add(publish("b1", bob, "toy", H10.plusSeconds(5), 5_000, 500, 50, 10));
    fs.add(publish("b2", bob, "big", H11.plusSeconds(5), 7_000, 700, 70, 20));
    CompletableFuture.allOf(fs.toArray(CompletableFuture[]::new)).get(10, TimeUnit.SECONDS);
  }

  static CompletableFuture<Void> publish(
      String id,
      CreatedApiKey key,
      String model,
      Instant at,
      long prefill,
      long decode,
      int prompt,
      int completion) {
    UsageRecord r =
        TestSupport.record(
            id, key.keyId(), key.accountId(), model, at, prefill, decode, prompt, completion);
    return billing.ledger().publish(r);
  }

  @AfterAll
  static void stop() {
    billing.close();
  }

  @Test
  void eachKeySeesOnlyItsOwnTotalsAndBuckets() {
    UsageReport a = billing.usage().usage(alice.keyId(), H10, H12.plus(Duration.ofHours(1)));
    assertThat(a.apiKeyId()).isEqualTo(alice.keyId());
    assertThat(a.totals()).isEqualTo(new UsageTotals(5, 2200, 2000, 200, 35, 15));
    assertThat(a.hours())
        .containsExactly(
            new HourlyUsage(H10, "big", new UsageTotals(1, 1100, 1000, 100, 7, 3)),
            new HourlyUsage(H10, "toy", new UsageTotals(2, 330, 300, 30, 11, 3)),
            new HourlyUsage(H11, "toy", new UsageTotals(1, 330, 300, 30, 8, 4)),
            new HourlyUsage(H12, "toy", new UsageTotals(1, 440, 400, 40, 9, 5)));

    UsageReport b = billing.usage().usage(bob.keyId(), H10, H12.plus(Duration.ofHours(1)));
    assertThat(b.totals()).isEqualTo(new UsageTotals(2, 13_200, 12_000, 1_200, 120, 30));
    assertThat(b.hours())
        .containsExactly(
            new HourlyUsage(H10, "toy", new UsageTotals(1, 5_500, 5_000, 500, 50, 10)),
            new HourlyUsage(H11, "big", new UsageTotals(1, 7_700, 7_000, 700, 70, 20)));

    UsageReport nobody = billing.usage().usage(424242, H10, H12);
    assertThat(nobody.totals()).isEqualTo(UsageTotals.ZERO);
    assertThat(nobody.hours()).isEmpty();
  }

  @Test
  void timeRangeSelectsWholeHours() {
    UsageReport only11 = billing.usage().usage(alice.keyId(), H11, H12);
    assertThat(only11.from()).isEqualTo(H11);
    assertThat(only11.to()).isEqualTo(H12);
    assertThat(only11.totals().requests()).isEqualTo(1);
    assertThat(only11.hours()).extracting(HourlyUsage::hour).containsOnly(H11);

    // Unaligned bounds widen to the hours they touch: 10:30..11:15 -> 10:00..12:00.
    UsageReport widened =
        billing.usage().usage(alice.keyId(), H10.plusSeconds(1800), H11.plusSeconds(900));
    assertThat(widened.from()).isEqualTo(H10);
    assertThat(widened.to()).isEqualTo(H12);
    assertThat(widened.totals().requests()).isEqualTo(4);

    UsageReport from11 = billing.usage().usage(alice.keyId(), H11, H12.plus(Duration.ofDays(1)));
    assertThat(from11.totals().requests()).isEqualTo(2);

    UsageReport empty = billing.usage().usage(alice.keyId(), H10.minus(Duration.ofDays(1)), H10);
    assertThat(empty.hours()).isEmpty();

    assertThatThrownBy(() -> billing.usage().usage(alice.keyId(), H11, H10))
        .isInstanceOf(IllegalArgumentException.class);
  }

  @Test
  void totalsEqualTheSumOfTheRawRecords() {
    long rawDevice = 0;
    for (String id : List.of("a1", "a2", "a3", "a4", "a5")) {
      rawDevice += billing.usage().find(id).orElseThrow().record().deviceNs();
    }
    UsageReport a = billing.usage().usage(alice.keyId(), H10, H12.plus(Duration.ofHours(1)));
    assertThat(a.totals().deviceNs()).isEqualTo(rawDevice);
    assertThat(billing.usage().find("b1").orElseThrow().record().apiKeyId()).isEqualTo(bob.keyId());
  }
}
