package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.db.Database;
import io.gpumeter.metering.TimerInfo;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageStatus;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.Statement;
import java.time.Instant;
import java.time.YearMonth;
import java.time.ZoneOffset;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The money commands against a real embedded database: each command once, the bad inputs (exit
 * status 2, the reason on stderr, nothing on stdout, nothing changed), and {@code invoice verify}'s
 * exit status 3. Usage reaches the ledger the way a server's does ({@code Billing.ledger()}).
 */
class MoneyCommandsTest {
  static final long SECOND = 1_000_000_000L;
  static Path file;
  static String cfg;

  @BeforeAll
  static void config() throws Exception {
    Path data = Path.of("target", "test-data", "money-" + System.nanoTime()).toAbsolutePath();
    Files.createDirectories(data);
    Path cache = Path.of("target", "pg-binaries").toAbsolutePath();
    file = data.resolve("gpumeter.properties");
    // back-dated price history below: no lead (the lead is PriceChangeReceiptsTest's)
    Files.writeString(
        file, "data.dir=" + data + "\ndb.binary_cache_dir=" + cache + "\npricing.min_lead=0s\n");
    cfg = file.toString();
  }

  @Test
  void accountsPricesPlansCreditsBalancesAndInvoices() throws Exception {
    // accounts
    Cli created = ok("account", "create", "acme", "--currency", "USD");
    assertThat(created.out()).startsWith("ID\tNAME\tCURRENCY\tSTATUS\tPOSTPAID\tCREATED\n");
    assertThat(created.out()).contains("\tacme\tUSD\tactive\tfalse\t");
    ok("account", "create", "beta", "--postpaid");
    assertThat(ok("account", "list").out()).contains("\tbeta\tUSD\tactive\ttrue\t");
    assertThat(ok("account", "suspend", "acme").out()).contains("\tacme\tUSD\tsuspended\t");
    assertThat(ok("account", "list").out()).contains("\tacme\tUSD\tsuspended\t");
    assertThat(ok("account", "resume", "acme").out()).contains("\tacme\tUSD\tactive\t");
    String accounts = ok("account", "list").out();

    // prices: micro-units and the decimal string
    Cli price =
        ok(
            "price",
            "set",
            "--model",
            "*",
            "--device-class",
            "cpu",
            "--micros-per-second",
            "3000",
            "--from",
            "2026-01-01T00:00:00Z");
    assertThat(price.out()).contains("\t*\tcpu\tUSD\t3000\t0.003000\t2026-01-01T00:00:00Z\t-");
    String prices = ok("price", "list").out();
    assertThat(prices.strip().split("\n")).hasSize(2);

    // plans
    assertThat(ok("plan", "create", "small", "--included-seconds", "1").out())
        .contains("\tsmall\t" + SECOND);
    assertThat(ok("plan", "list").out()).contains("\tsmall\t" + SECOND);
    assertThat(
            ok(
                    "plan",
                    "assign",
                    "--account",
                    "acme",
                    "--plan",
                    "small",
                    "--from",
                    "2026-01-01T00:00:00Z")
                .out())
        .contains("\tacme\tsmall\t2026-01-01T00:00:00Z\t-");
    // a class-weighted pool with an overage price (V20), and its refusals
    assertThat(
            ok(
                    "plan",
                    "create",
                    "weighted",
                    "--included-seconds",
                    "2",
                    "--weight",
                    "cpu=2500000",
                    "--overage-micros-per-second",
                    "4000")
                .out())
        .startsWith(MoneyCommands.PLAN_HEADER + "\n")
        .contains("\tweighted\t" + 2 * SECOND + "\t4000\t0.004000\tcpu=2500000");
    bad(
        "negative weight",
        "weight of device class 'cpu'",
        "plan",
        "create",
        "w2",
        "--included-seconds",
        "1",
        "--weight",
        "cpu=-1");
    bad(
        "unknown class",
        "unknown device class 'nvidia-b300'",
        "plan",
        "create",
        "w3",
        "--included-seconds",
        "1",
        "--weight",
        "nvidia-b300=5");
    bad(
        "overage price on a prepaid account",
        "does not allow postpaid",
        "plan",
        "assign",
        "--account",
        "acme",
        "--plan",
        "weighted");
    String plans = ok("plan", "list").out();

    // credits
    assertThat(
            ok(
                    "credit",
                    "grant",
                    "--account",
                    "acme",
                    "--micros",
                    "2000",
                    "--expires",
                    "2099-01-01T00:00:00Z",
                    "--note",
                    "promo")
                .out())
        .contains("\tgrant\t2000\t0.002000\t2000\t0.002000\t2099-01-01T00:00:00Z\t");
    assertThat(ok("credit", "grant", "--account", "acme", "--micros", "5000", "--top-up").out())
        .contains("\ttopup\t5000\t0.005000\t5000\t0.005000\t-\t");
    assertThat(ok("credit", "list", "--account", "acme").out().strip().split("\n")).hasSize(3);
    assertThat(ok("balance", "show", "--account", "acme").out())
        .contains("acme\tUSD\t7000\t0.007000\t" + 7000 * SECOND + "\t");

    // usage: 2 s on cpu in March 2026 (1 s included; 1 s = 3000: 2000 from the earliest-expiring
    // grant, 1000 from the top-up);
    // 1 s of beta's on a class no price covers
    try (Billing billing =
        Billing.start(ServerConfig.load(file, Map.of(), new Properties()).databaseConfig())) {
      CreatedApiKey acme = billing.apiKeys().create("acme");
      CreatedApiKey beta = billing.apiKeys().create("beta");
      Instant mar = Instant.parse("2026-03-02T10:00:00Z");
      TimerInfo h200 = new TimerInfo("cuda-event", "cuda", "NVIDIA H200", "", "", "");
      billing
          .ledger()
          .publish(record("m-r1", acme, TimerInfo.cpu("test"), mar))
          .get(30, TimeUnit.SECONDS);
      billing
          .ledger()
          .publish(record("m-r2", acme, TimerInfo.cpu("test"), mar.plusSeconds(60)))
          .get(30, TimeUnit.SECONDS);
      billing.ledger().publish(record("m-r3", beta, h200, mar)).get(30, TimeUnit.SECONDS);
    }
    assertThat(ok("credit", "list", "--account", "acme").out())
        .contains("\tgrant\t2000\t0.002000\t0\t0.000000\t");
    assertThat(ok("balance", "show", "--account", "acme").out())
        .contains("acme\tUSD\t4000\t0.004000\t" + 4000 * SECOND + "\t");

    // invoices
    Cli json = ok("invoice", "show", "--account", "acme", "--month", "2026-03");
    assertThat(json.out()).startsWith("{").contains("3000").contains("acme");
    Cli csv = ok("invoice", "show", "--account", "acme", "--month", "2026-03", "--format", "csv");
    assertThat(csv.out()).contains("cpu").contains("3000");
    Cli html = ok("invoice", "show", "--account", "acme", "--month", "2026-03", "--format", "html");
    assertThat(html.out()).contains("<html").contains("acme");
    assertThat(ok("invoice", "list", "--account", "acme").out())
        .contains("2026-03\tUSD\t1\t0\t0.000000\t-");
    Cli verified = ok("invoice", "verify", "--account", "acme", "--month", "2026-03");
    assertThat(verified.out()).contains("recomputed\t2026-03\tUSD\t1\t0\t0.000000\t-");
    Cli fin = ok("invoice", "finalize", "--account", "acme", "--month", "2026-03");
    assertThat(fin.out()).contains("2026-03\tUSD\t1\t0\t0.000000\t2");
    ok("invoice", "verify", "--account", "acme", "--month", "2026-03");
    // beta's record no price covers: counted, not a mismatch
    assertThat(ok("invoice", "verify", "--account", "beta", "--month", "2026-03").out())
        .contains("unpriced records: 1");
    // a stored invoice line altered behind the engine's back: exit status 3, the line named
    try (Database db =
        Database.start(ServerConfig.load(file, Map.of(), new Properties()).databaseConfig())) {
      try (Connection c = db.maintenanceDataSource().getConnection();
          Statement st = c.createStatement()) {
        st.execute("ALTER TABLE invoice_lines DISABLE TRIGGER invoice_lines_append_only");
        int changed =
            st.executeUpdate(
                "UPDATE invoice_lines SET amount_micros = amount_micros + 1,"
                    + " due_micros = due_micros + 1 WHERE period = DATE '2026-03-01' AND"
                    + " account_id = (SELECT id FROM accounts WHERE name = 'acme')");
        st.execute("ALTER TABLE invoice_lines ENABLE TRIGGER invoice_lines_append_only");
        assertThat(changed).isEqualTo(1);
      }
    }
    Cli mismatch = cli("invoice", "verify", "--account", "acme", "--month", "2026-03");
    assertThat(mismatch.status()).as(mismatch.toString()).isEqualTo(Main.EXIT_DRIFT);
    assertThat(mismatch.err()).as(mismatch.toString()).contains("mismatch: ");
    assertThat(mismatch.out()).contains("stated\t").contains("recomputed\t");

    // bad input: exit status 2, the reason on stderr, nothing changed
    bad(
        "account create: unknown currency",
        "unknown currency 'ZZZ'",
        "account",
        "create",
        "gamma",
        "--currency",
        "ZZZ");
    bad("account create: taken", "exists already", "account", "create", "acme");
    bad("account suspend: missing", "no account named 'nobody'", "account", "suspend", "nobody");
    assertThat(ok("account", "list").out()).isEqualTo(accounts);
    bad(
        "price: negative",
        "price must be >= 0",
        "price",
        "set",
        "--model",
        "*",
        "--device-class",
        "cpu",
        "--micros-per-second=-5",
        "--from",
        "2027-01-01T00:00:00Z");
    bad(
        "price: overlap",
        "overlap",
        "price",
        "set",
        "--model",
        "*",
        "--device-class",
        "cpu",
        "--micros-per-second",
        "4000",
        "--from",
        "2025-12-01T00:00:00Z");
    bad(
        "price: currency",
        "unknown currency",
        "price",
        "set",
        "--model",
        "*",
        "--device-class",
        "cpu",
        "--micros-per-second",
        "1",
        "--currency",
        "ZZZ");
    bad(
        "price: not a number",
        "'1.5'",
        "price",
        "set",
        "--model",
        "*",
        "--device-class",
        "cpu",
        "--micros-per-second",
        "1.5");
    assertThat(ok("price", "list").out()).isEqualTo(prices);
    bad("plan: negative", "must be >= 0", "plan", "create", "neg", "--included-seconds=-1");
    bad(
        "plan assign: no plan",
        "no plan named 'big'",
        "plan",
        "assign",
        "--account",
        "acme",
        "--plan",
        "big");
    bad(
        "plan assign: no account",
        "no account named 'nobody'",
        "plan",
        "assign",
        "--account",
        "nobody",
        "--plan",
        "small");
    assertThat(ok("plan", "list").out()).isEqualTo(plans);
    String credits = ok("credit", "list", "--account", "acme").out();
    bad(
        "credit: expired",
        "expiry must be in the future",
        "credit",
        "grant",
        "--account",
        "acme",
        "--micros",
        "10",
        "--expires",
        "2020-01-01T00:00:00Z");
    bad("credit: zero", "must be > 0", "credit", "grant", "--account", "acme", "--micros", "0");
    bad(
        "credit: no account",
        "no account named 'nobody'",
        "credit",
        "grant",
        "--account",
        "nobody",
        "--micros",
        "10");
    bad(
        "credit list: no account",
        "no account named 'nobody'",
        "credit",
        "list",
        "--account",
        "nobody");
    assertThat(ok("credit", "list", "--account", "acme").out()).isEqualTo(credits);
    bad(
        "balance: no account",
        "no account named 'nobody'",
        "balance",
        "show",
        "--account",
        "nobody");
    bad(
        "invoice: month",
        "must be a month YYYY-MM",
        "invoice",
        "show",
        "--account",
        "acme",
        "--month",
        "March");
    bad(
        "invoice: format",
        "--format must be json, csv or html",
        "invoice",
        "show",
        "--account",
        "acme",
        "--month",
        "2026-03",
        "--format",
        "pdf");
    bad(
        "invoice: final already",
        "final already",
        "invoice",
        "finalize",
        "--account",
        "acme",
        "--month",
        "2026-03");
    String now = YearMonth.now(ZoneOffset.UTC).toString();
    bad(
        "invoice: not ended",
        "has not ended yet",
        "invoice",
        "finalize",
        "--account",
        "acme",
        "--month",
        now);
    bad(
        "invoice: no account",
        "no account named 'nobody'",
        "invoice",
        "list",
        "--account",
        "nobody");
    bad("group without subcommand", "Missing subcommand", "invoice");
    assertThat(ok("invoice", "list", "--account", "acme").out().strip().split("\n")).hasSize(2);
  }

  /**
   * {@code price set --from} earlier than {@code pricing.min_lead} after now (the default 30 s
   * here) is refused with exit status 2, a message naming the setting and the earliest start, and
   * nothing changed; with no {@code --from} the version starts the lead from now.
   */
  @Test
  void aPriceStartingInsideTheMinimumLeadIsRefusedAndChangesNothing() throws Exception {
    Path data = Path.of("target", "test-data", "money-lead-" + System.nanoTime()).toAbsolutePath();
    Files.createDirectories(data);
    Path leadFile = data.resolve("gpumeter.properties");
    // no pricing.min_lead: the default, 30 s
    Files.writeString(
        leadFile,
        "data.dir="
            + data
            + "\ndb.binary_cache_dir="
            + Path.of("target", "pg-binaries").toAbsolutePath()
            + "\n");
    String lead = leadFile.toString();
    Cli empty = run("price", "list", "--config", lead);
    assertThat(empty.status()).as(empty.toString()).isZero();
    String[] base = {
      "price", "set", "--model", "*", "--device-class", "cpu", "--micros-per-second", "3000"
    };
    for (Instant from :
        new Instant[] {
          Instant.now().plusSeconds(5), Instant.now().minusSeconds(3600), Instant.now()
        }) {
      String[] args = java.util.Arrays.copyOf(base, base.length + 4);
      args[base.length] = "--from";
      args[base.length + 1] = from.toString();
      args[base.length + 2] = "--config";
      args[base.length + 3] = lead;
      Cli r = run(args);
      assertThat(r.status()).as(from + ": " + r).isEqualTo(2);
      assertThat(r.err())
          .as(from + ": " + r)
          .contains("must start at least PT30S from now (pricing.min_lead)")
          .contains("was ")
          .contains("earliest ");
      assertThat(r.out()).as(from + ": " + r).isEmpty();
    }
    assertThat(run("price", "list", "--config", lead).out()).isEqualTo(empty.out());

    // no --from: it starts the lead from now
    Instant before = Instant.now();
    String[] args = java.util.Arrays.copyOf(base, base.length + 2);
    args[base.length] = "--config";
    args[base.length + 1] = lead;
    Cli set = run(args);
    assertThat(set.status()).as(set.toString()).isZero();
    String[] row = set.out().strip().split("\n")[1].split("\t");
    Instant start = Instant.parse(row[6]);
    assertThat(start).as(set.toString()).isAfter(before.plusSeconds(29));
    assertThat(run("price", "list", "--config", lead).out().strip().split("\n")).hasSize(2);
  }

  @Test
  void helpWorksOnEveryMoneyCommand() {
    String[][] asks = {
      {"account", "--help"}, {"account", "create", "--help"}, {"account", "list", "-h"},
      {"account", "suspend", "-h"}, {"account", "resume", "-h"}, {"price", "set", "--help"},
      {"price", "list", "-h"}, {"plan", "create", "-h"}, {"plan", "list", "-h"},
      {"plan", "assign", "-h"}, {"credit", "grant", "-h"}, {"credit", "list", "-h"},
      {"balance", "show", "-h"}, {"invoice", "list", "-h"}, {"invoice", "show", "-h"},
      {"invoice", "finalize", "-h"}, {"invoice", "verify", "-h"},
    };
    for (String[] args : asks) {
      Cli r = MoneyCommandsTest.run(args);
      assertThat(r.status()).as(r.toString()).isZero();
      assertThat(r.out()).as(r.toString()).contains("Usage:").contains("--config=FILE");
    }
    assertThat(run("invoice", "verify", "--help").out()).contains("3   the recomputed invoice");
  }

  static UsageRecord record(String id, CreatedApiKey key, TimerInfo timer, Instant at) {
    return new UsageRecord(
        id,
        key.keyId(),
        key.accountId(),
        "toy",
        timer,
        "tokens",
        SECOND,
        SECOND / 2,
        SECOND / 2,
        5,
        3,
        1_000,
        4,
        UsageStatus.OK,
        at.minusMillis(10),
        at,
        id,
        0,
        0);
  }

  private static Cli ok(String... args) {
    Cli r = cli(args);
    assertThat(r.status()).as(r.toString()).isZero();
    return r;
  }

  private static void bad(String what, String message, String... args) {
    Cli r = cli(args);
    assertThat(r.status()).as(what + ": " + r).isEqualTo(2);
    assertThat(r.err()).as(what + ": " + r).contains(message);
    assertThat(r.out()).as(what + ": " + r).isEmpty();
  }

  private static Cli cli(String... args) {
    String[] all = java.util.Arrays.copyOf(args, args.length + 2);
    all[args.length] = "--config";
    all[args.length + 1] = cfg;
    return run(all);
  }

  record Cli(int status, String out, String err) {}

  private static Cli run(String... args) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int status =
        Main.run(
            args,
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8));
    return new Cli(
        status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }
}
