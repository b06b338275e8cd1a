package io.gpumeter.server;

import io.gpumeter.billing.Account;
import io.gpumeter.billing.Balance;
import io.gpumeter.billing.BillingAdmin;
import io.gpumeter.billing.CreditGrant;
import io.gpumeter.billing.Invoice;
import io.gpumeter.billing.InvoiceVerification;
import io.gpumeter.billing.Plan;
import io.gpumeter.billing.PriceVersion;
import io.gpumeter.billing.Subscription;
import io.gpumeter.billing.accounting.Accounting;
import java.io.PrintWriter;
import java.math.BigInteger;
import java.time.Instant;
import java.time.YearMonth;
import java.time.format.DateTimeParseException;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.function.Function;
import picocli.CommandLine.Command;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import picocli.CommandLine.TypeConversionException;

/**
 * The money commands ({@code account}, {@code price}, {@code plan}, {@code credit}, {@code
 * balance}, {@code invoice}): the operations of {@link Accounting}, through {@link BillingAdmin}
 * (only the database is opened, over TCP when a server runs on the embedded folder, and closed).
 *
 * <p>Money goes in as integer micro-units and comes out as integer micro-units followed by the
 * decimal string of currency units ({@link Accounting#decimal}); never a floating-point number.
 * Lists are tab-separated with a header line; times are ISO-8601 UTC, {@code -} when absent. Input
 * that {@link Accounting} refuses (negative price, overlapping price versions, unknown currency,
 * missing account or plan, expiry in the past, a month not ended) changes nothing and is exit
 * status 2 with the reason on stderr (through {@link Main}'s handler of {@link
 * IllegalArgumentException}); {@code invoice verify} exits with {@link Main#EXIT_DRIFT} when the
 * recomputed invoice differs.
 */
final class MoneyCommands {
  private MoneyCommands() {}

  /** A group command without its subcommand: the usage error, exit status 2. */
  abstract static class Group implements Callable<Integer> {
    @Spec CommandSpec spec;

    @Mixin ConfigOption config;

    @Override
    public Integer call() {
      throw new ParameterException(
          spec.commandLine(),
          "Missing subcommand: one of " + String.join(", ", spec.subcommands().keySet()));
    }
  }

  /** A leaf command: opens the database, runs {@link #run}, prints what it returns on stdout. */
  abstract static class Leaf implements Callable<Integer> {
    @Spec CommandSpec spec;

    @Mixin ConfigOption config;

    /** What to print on stdout (without the final line break). */
    abstract String run(Accounting money);

    @Override
    public Integer call() throws Exception {
      ServerConfig settings = config.load();
      String text;
      try (BillingAdmin admin = BillingAdmin.open(settings.toolDatabaseConfig())) {
        text = run(admin.accounting());
      }
      PrintWriter out = spec.commandLine().getOut();
      out.println(text);
      out.flush();
      return 0;
    }

    ParameterException usage(String message) {
      return new ParameterException(spec.commandLine(), message);
    }
  }

  /** {@code 1234567 1.234567}: micro-units and the decimal string, one tab between. */
  static String money(long micros) {
    return micros + "\t" + Accounting.decimal(micros);
  }

  static String time(Instant t) {
    return t == null ? "-" : t.toString();
  }

  /** Whole seconds to nanoseconds, refusing overflow. */
  static long secondsToNs(long seconds) {
    try {
      return Math.multiplyExact(seconds, 1_000_000_000L);
    } catch (ArithmeticException e) {
      throw new IllegalArgumentException("too many seconds: " + seconds, e);
    }
  }

  static <T> String table(String header, List<T> rows, Function<T, String> row) {
    StringBuilder sb = new StringBuilder(header);
    for (T r : rows) {
      sb.append('\n').append(row.apply(r));
    }
    return sb.toString();
  }

  static final String ACCOUNT_HEADER = "ID\tNAME\tCURRENCY\tSTATUS\tPOSTPAID\tCREATED";

  static String accountRow(Account a) {
    return a.id()
        + "\t"
        + a.name()
        + "\t"
        + a.currency()
        + "\t"
        + a.status()
        + "\t"
        + a.postpaidAllowed()
        + "\t"
        + a.createdAt();
  }

  /** {@code YYYY-MM}. */
  static final class Month implements ITypeConverter<YearMonth> {
    @Override
    public YearMonth convert(String text) {
      try {
        return YearMonth.parse(text.trim());
      } catch (DateTimeParseException e) {
        throw new TypeConversionException(
            "must be a month YYYY-MM, such as 2026-03; got '" + text + "'");
      }
    }
  }

  // ---------------------------------------------------------------- account

  @Command(
      name = "account",
      mixinStandardHelpOptions = true,
      versionProvider = Main.Version.class,
      description = "Accounts: create, list, suspend, resume.",
      subcommands = {
        AccountCommand.Create.class,
        AccountCommand.ListAccounts.class,
        AccountCommand.Suspend.class,
        AccountCommand.Resume.class
      })
  static final class AccountCommand extends Group {
    @Command(
        name = "create",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Creates an account billed in one currency; prints it.")
    static final class Create extends Leaf {
      @Parameters(index = "0", paramLabel = "NAME", description = "1-200 characters.")
      String name;

      @Option(
          names = "--currency",
          paramLabel = "CODE",
          defaultValue = "USD",
          description = "ISO 4217 code of its money (default USD).")
      String currency;

      @Option(
          names = "--postpaid",
          description = "Allow postpaid overage once allowance and credits are used up.")
      boolean postpaid;

      @Override
      String run(Accounting money) {
        return ACCOUNT_HEADER + "\n" + accountRow(money.createAccount(name, currency, postpaid));
      }
    }

    @Command(
        name = "list",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Lists the accounts.")
    static final class ListAccounts extends Leaf {
      @Override
      String run(Accounting money) {
        return table(ACCOUNT_HEADER, money.listAccounts(), MoneyCommands::accountRow);
      }
    }

    @Command(
        name = "suspend",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Suspends an account: its requests are refused until `account resume`.")
    static final class Suspend extends Leaf {
      @Parameters(index = "0", paramLabel = "NAME")
      String name;

      @Override
      String run(Accounting money) {
        return ACCOUNT_HEADER + "\n" + accountRow(money.suspend(name));
      }
    }

    @Command(
        name = "resume",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Makes a suspended account active again.")
    static final class Resume extends Leaf {
      @Parameters(index = "0", paramLabel = "NAME")
      String name;

      @Override
      String run(Accounting money) {
        return ACCOUNT_HEADER + "\n" + accountRow(money.resume(name));
      }
    }
  }

  // ---------------------------------------------------------------- price

  static final String PRICE_HEADER =
      "ID\tMODEL\tDEVICE_CLASS\tCURRENCY\tMICROS_PER_SECOND\tPER_SECOND\tFROM\tTO";

  static String priceRow(PriceVersion p) {
    return p.id()
        + "\t"
        + p.model()
        + "\t"
        + p.deviceClass()
        + "\t"
        + p.currency()
        + "\t"
        + money(p.priceMicrosPerSecond())
        + "\t"
        + p.from()
        + "\t"
        + time(p.to());
  }

  @Command(
      name = "price",
      mixinStandardHelpOptions = true,
      versionProvider = Main.Version.class,
      description = "The price book: effective-dated prices per device-second.",
      subcommands = {PriceCommand.Set.class, PriceCommand.ListPrices.class})
  static final class PriceCommand extends Group {
    @Command(
        name = "set",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = {
          "Adds a price version from --from on. An open-ended version of the same model, class",
          "and currency that priced nothing from then on is closed there; any other overlap is",
          "refused."
        })
    static final class Set extends Leaf {
      @Option(
          names = "--model",
          paramLabel = "M",
          required = true,
          description = "The model's name, or '*' for every model of the class.")
      String model;

      @Option(
          names = "--device-class",
          paramLabel = "C",
          required = true,
          description = "Normalised device class: cpu, nvidia-h100-80gb, nvidia-h200, ...")
      String deviceClass;

      @Option(
          names = "--micros-per-second",
          paramLabel = "N",
          required = true,
          description = "Price in integer micro-units per device-second (>= 0).")
      long micros;

      @Option(
          names = "--currency",
          paramLabel = "CODE",
          defaultValue = "USD",
          description = "ISO 4217 code (default USD).")
      String currency;

      @Option(
          names = "--from",
          paramLabel = "ISO",
          converter = ReconcileCommand.IsoInstant.class,
          description = {
            "Start, ISO-8601 with an offset; at least pricing.min_lead (30s) from now, so that",
            "every replica's receipts know the price before it applies (default: that)."
          })
      Instant from;

      @Override
      String run(Accounting money) {
        java.time.Duration lead;
        try {
          lead = config.load().priceMinLead(); // read once already by call(), before this
        } catch (java.io.IOException e) {
          throw new java.io.UncheckedIOException(e);
        }
        Instant start = money.priceStart(from, lead);
        return PRICE_HEADER
            + "\n"
            + priceRow(money.setPrice(model, deviceClass, currency, micros, start, null));
      }
    }

    @Command(
        name = "list",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Lists every price version.")
    static final class ListPrices extends Leaf {
      @Override
      String run(Accounting money) {
        return table(PRICE_HEADER, money.listPrices(), MoneyCommands::priceRow);
      }
    }
  }

  // ---------------------------------------------------------------- plan

  static final String PLAN_HEADER =
      "ID\tNAME\tINCLUDED_NS\tOVERAGE_MICROS_PER_S\tOVERAGE\tCLASS_WEIGHTS_PPM";

  static String planRow(Plan p) {
    Long over = p.overagePriceMicrosPerSecond();
    StringBuilder weights = new StringBuilder();
    new java.util.TreeMap<>(p.classWeightsPpm())
        .forEach(
            (c, w) ->
                weights.append(weights.length() == 0 ? "" : ",").append(c).append('=').append(w));
    return p.id()
        + "\t"
        + p.name()
        + "\t"
        + p.includedNs()
        + "\t"
        + (over == null ? "-" : over)
        + "\t"
        + (over == null ? "-" : Accounting.decimal(over))
        + "\t"
        + (weights.length() == 0 ? "-" : weights);
  }

  @Command(
      name = "plan",
      mixinStandardHelpOptions = true,
      versionProvider = Main.Version.class,
      description = "Plans (included device time per month): create, list, assign.",
      subcommands = {
        PlanCommand.Create.class,
        PlanCommand.ListPlans.class,
        PlanCommand.Assign.class
      })
  static final class PlanCommand extends Group {
    @Command(
        name = "create",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Creates a plan with included device-seconds per calendar month (UTC).")
    static final class Create extends Leaf {
      @Parameters(index = "0", paramLabel = "NAME", description = "1-200 characters.")
      String name;

      @Option(
          names = "--included-seconds",
          paramLabel = "N",
          required = true,
          description = "Included device-seconds per month, a whole number >= 0.")
      long includedSeconds;

      @Option(
          names = "--overage-micros-per-second",
          paramLabel = "N",
          description =
              "Price of the part of a charge beyond the allowance, micro-units per device-second"
                  + " (default: the price book); the plan then needs postpaid accounts.")
      Long overageMicrosPerSecond;

      @Option(
          names = "--weight",
          paramLabel = "CLASS=PPM",
          description =
              "Repeatable: a device-second of CLASS uses PPM/1000000 weighted seconds of the pool"
                  + " (classes not named: 1000000).")
      java.util.Map<String, Long> weights = new java.util.LinkedHashMap<>();

      @Override
      String run(Accounting money) {
        return PLAN_HEADER
            + "\n"
            + planRow(
                money.createPlan(
                    name, secondsToNs(includedSeconds), overageMicrosPerSecond, weights));
      }
    }

    @Command(
        name = "list",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Lists the plans.")
    static final class ListPlans extends Leaf {
      @Override
      String run(Accounting money) {
        return table(PLAN_HEADER, money.listPlans(), MoneyCommands::planRow);
      }
    }

    @Command(
        name = "assign",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Subscribes an account to a plan from --from on.")
    static final class Assign extends Leaf {
      @Option(names = "--account", paramLabel = "NAME", required = true)
      String account;

      @Option(names = "--plan", paramLabel = "NAME", required = true)
      String plan;

      @Option(
          names = "--from",
          paramLabel = "ISO",
          converter = ReconcileCommand.IsoInstant.class,
          description = "Start, ISO-8601 with an offset (default: now).")
      Instant from;

      @Override
      String run(Accounting money) {
        Subscription s = money.assignPlan(account, plan, from == null ? Instant.now() : from);
        return "ID\tACCOUNT\tPLAN\tFROM\tTO\n"
            + s.id()
            + "\t"
            + account
            + "\t"
            + plan
            + "\t"
            + s.from()
            + "\t"
            + time(s.to());
      }
    }
  }

  // ---------------------------------------------------------------- credit

  static final String CREDIT_HEADER =
      "ID\tSOURCE\tAMOUNT_MICROS\tAMOUNT\tREMAINING_MICROS\tREMAINING\tEXPIRES\tGRANTED\tNOTE";

  /** The remainder is kept exactly (nano-micro-units); shown rounded by the one rounding rule. */
  static String creditRow(CreditGrant g) {
    return g.id()
        + "\t"
        + g.source()
        + "\t"
        + money(g.amountMicros())
        + "\t"
        + money(Accounting.roundToMicros(g.remainingNanoMicros()))
        + "\t"
        + time(g.expiresAt())
        + "\t"
        + g.grantedAt()
        + "\t"
        + g.note();
  }

  @Command(
      name = "credit",
      mixinStandardHelpOptions = true,
      versionProvider = Main.Version.class,
      description = "Prepaid credits: grant, list.",
      subcommands = {CreditCommand.Grant.class, CreditCommand.ListCredits.class})
  static final class CreditCommand extends Group {
    @Command(
        name = "grant",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Grants prepaid credit (a grant, or a top-up with --top-up).")
    static final class Grant extends Leaf {
      @Option(names = "--account", paramLabel = "NAME", required = true)
      String account;

      @Option(
          names = "--micros",
          paramLabel = "N",
          required = true,
          description = "Amount in integer micro-units of the account's currency (> 0).")
      long micros;

      @Option(
          names = "--expires",
          paramLabel = "ISO",
          converter = ReconcileCommand.IsoInstant.class,
          description = "Expiry, in the future, ISO-8601 with an offset (default: never).")
      Instant expires;

      @Option(names = "--top-up", description = "Book it as a paid top-up rather than a grant.")
      boolean topUp;

      @Option(names = "--note", paramLabel = "TEXT", description = "Free text kept with it.")
      String note;

      @Override
      String run(Accounting money) {
        return CREDIT_HEADER
            + "\n"
            + creditRow(
                money.grantCredit(account, topUp ? "topup" : "grant", micros, expires, note));
      }
    }

    @Command(
        name = "list",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Lists an account's credits with what remains of each.")
    static final class ListCredits extends Leaf {
      @Option(names = "--account", paramLabel = "NAME", required = true)
      String account;

      @Override
      String run(Accounting money) {
        money.account(account); // a missing account is an error, not an empty list
        return table(CREDIT_HEADER, money.listCredits(account), MoneyCommands::creditRow);
      }
    }
  }

  // ---------------------------------------------------------------- balance

  @Command(
      name = "balance",
      mixinStandardHelpOptions = true,
      versionProvider = Main.Version.class,
      description = "Balances: show.",
      subcommands = {BalanceCommand.Show.class})
  static final class BalanceCommand extends Group {
    @Command(
        name = "show",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = {
          "Shows an account's credit balance (the sum of its balance entries; the exact",
          "nano-micro-units and the rounded micro-units) and this month's plan allowance."
        })
    static final class Show extends Leaf {
      @Option(names = "--account", paramLabel = "NAME", required = true)
      String account;

      @Override
      String run(Accounting money) {
        Balance b = money.balance(account);
        BigInteger exact = b.exactNanoMicros();
        return "ACCOUNT\tCURRENCY\tBALANCE_MICROS\tBALANCE\tEXACT_NANO_MICROS\tINCLUDED_NS\tUSED_NS\n"
            + account
            + "\t"
            + b.currency()
            + "\t"
            + money(b.micros())
            + "\t"
            + exact
            + "\t"
            + b.allowanceIncludedNs()
            + "\t"
            + b.allowanceUsedNs();
      }
    }
  }

  // ---------------------------------------------------------------- invoice

  static final String INVOICE_HEADER = "MONTH\tCURRENCY\tLINES\tTOTAL_MICROS\tTOTAL\tFINALIZED";

  static String invoiceRow(Invoice i) {
    return i.period()
        + "\t"
        + i.currency()
        + "\t"
        + i.lines().size()
        + "\t"
        + money(i.totalMicros())
        + "\t"
        + time(i.finalizedAt());
  }

  @Command(
      name = "invoice",
      mixinStandardHelpOptions = true,
      versionProvider = Main.Version.class,
      description = "Monthly invoices (UTC): list, show, verify, finalize.",
      subcommands = {
        InvoiceCommand.ListInvoices.class,
        InvoiceCommand.Show.class,
        InvoiceCommand.Verify.class,
        InvoiceCommand.Finalize.class
      })
  static final class InvoiceCommand extends Group {
    @Command(
        name = "list",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Lists an account's invoices: finalized ones and open months with charges.")
    static final class ListInvoices extends Leaf {
      @Option(names = "--account", paramLabel = "NAME", required = true)
      String account;

      @Override
      String run(Accounting money) {
        return table(INVOICE_HEADER, money.listInvoices(account), MoneyCommands::invoiceRow);
      }
    }

    @Command(
        name = "show",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Prints an invoice (a draft until finalized) as JSON, CSV or HTML.")
    static final class Show extends Leaf {
      @Option(names = "--account", paramLabel = "NAME", required = true)
      String account;

      @Option(names = "--month", paramLabel = "YYYY-MM", required = true, converter = Month.class)
      YearMonth month;

      @Option(
          names = "--format",
          paramLabel = "FORMAT",
          defaultValue = "json",
          description = "json (the default), csv or html.")
      String format;

      @Override
      String run(Accounting money) {
        if (!List.of("json", "csv", "html").contains(format)) {
          throw usage("--format must be json, csv or html, was '" + format + "'");
        }
        return Accounting.format(money.invoice(account, month), format).stripTrailing();
      }
    }

    @Command(
        name = "finalize",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = {
          "Freezes an ended month's invoice; charges that reach the ledger later go on the next",
          "invoice as late usage."
        })
    static final class Finalize extends Leaf {
      @Option(names = "--account", paramLabel = "NAME", required = true)
      String account;

      @Option(names = "--month", paramLabel = "YYYY-MM", required = true, converter = Month.class)
      YearMonth month;

      @Override
      String run(Accounting money) {
        return INVOICE_HEADER + "\n" + invoiceRow(money.finalizeInvoice(account, month));
      }
    }

    @Command(
        name = "verify",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = {
          "Recomputes an invoice from the raw per-request records and the price versions and",
          "compares it to the stated one, to the micro-unit."
        },
        exitCodeListHeading = "%nExit status:%n",
        exitCodeList = {
          "0:the invoice matches",
          "1:failure",
          "2:bad arguments or settings",
          "3:the recomputed invoice differs"
        })
    static final class Verify implements Callable<Integer> {
      @Spec CommandSpec spec;

      @Mixin ConfigOption config;

      @Option(names = "--account", paramLabel = "NAME", required = true)
      String account;

      @Option(names = "--month", paramLabel = "YYYY-MM", required = true, converter = Month.class)
      YearMonth month;

      @Override
      public Integer call() throws Exception {
        ServerConfig settings = config.load();
        InvoiceVerification v;
        try (BillingAdmin admin = BillingAdmin.open(settings.toolDatabaseConfig())) {
          v = admin.accounting().verifyInvoice(account, month);
        }
        PrintWriter out = spec.commandLine().getOut();
        out.println("\t" + INVOICE_HEADER);
        out.println("stated\t" + invoiceRow(v.stated()));
        out.println("recomputed\t" + invoiceRow(v.recomputed()));
        out.println("unpriced records: " + v.unpricedRecords());
        out.flush();
        if (v.ok()) {
          return 0;
        }
        PrintWriter err = spec.commandLine().getErr();
        for (String p : v.problems()) {
          err.println("mismatch: " + p);
        }
        err.flush();
        return Main.EXIT_DRIFT;
      }
    }
  }
}
