package io.gpumeter.billing.accounting;

import io.gpumeter.billing.Account;
import io.gpumeter.billing.Balance;
import io.gpumeter.billing.ChargeCost;
import io.gpumeter.billing.CreditGrant;
import io.gpumeter.billing.Invoice;
import io.gpumeter.billing.InvoiceVerification;
import io.gpumeter.billing.Plan;
import io.gpumeter.billing.PriceVersion;
import io.gpumeter.billing.Subscription;
import io.gpumeter.billing.invoices.InvoiceFormats;
import io.gpumeter.billing.invoices.Invoices;
import io.gpumeter.billing.plans.Accounts;
import io.gpumeter.billing.plans.Credits;
import io.gpumeter.billing.plans.Plans;
import io.gpumeter.billing.pricing.Money;
import io.gpumeter.billing.pricing.PriceBook;
import java.math.BigInteger;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.YearMonth;
import java.util.List;
import java.util.Optional;
import javax.sql.DataSource;

/**
 * The money operations in one place, for the admin API and the CLI (through {@code Billing} and
 * {@code BillingAdmin}): accounts, the price book, plans, credits, balances, invoices, and the
 * priced cost of a stored charge. Every method validates its input first and throws {@link
 * IllegalArgumentException} (naming the bad value) without changing anything; database failures are
 * {@link io.gpumeter.billing.BillingException}. All calls block on the database.
 */
public final class Accounting {
  private final Accounts accounts;
  private final PriceBook prices;
  private final Plans plans;
  private final Credits credits;
  private final Invoices invoices;
  private final Clock clock;

  public Accounting(DataSource dataSource, Clock clock) {
    this.clock = clock;
    this.accounts = new Accounts(dataSource);
    this.prices = new PriceBook(dataSource);
    this.plans = new Plans(dataSource);
    this.credits = new Credits(dataSource, clock);
    this.invoices = new Invoices(dataSource, clock);
  }

  public Account createAccount(String name, String currency, boolean postpaidAllowed) {
    return accounts.create(name, currency, postpaidAllowed);
  }

  public List<Account> listAccounts() {
    return accounts.list();
  }

  public Account account(String name) {
    return accounts.require(name);
  }

  public Account suspend(String name) {
    return accounts.setStatus(name, Account.SUSPENDED);
  }

  public Account resume(String name) {
    return accounts.setStatus(name, Account.ACTIVE);
  }

  public PriceVersion setPrice(
      String model,
      String deviceClass,
      String currency,
      long priceMicrosPerSecond,
      Instant from,
      Instant to) {
    return prices.set(model, deviceClass, currency, priceMicrosPerSecond, from, to);
  }

  /**
   * The start of a new price version set by an operator now: {@code requested}, or now + {@code
   * minLead} when null. Every replica's receipt cache ({@code pricing.PriceCache}) must know a
   * version before it applies, so that a receipt equals its stored charge across a price change
   * (DESIGN.md invariant 8); a version therefore starts at least {@code minLead} after now ({@code
   * pricing.min_lead}; zero: no lead, any start is taken).
   *
   * @throws IllegalArgumentException when {@code requested} is earlier than now + {@code minLead}
   */
  public Instant priceStart(Instant requested, Duration minLead) {
    Instant earliest = clock.instant().plus(minLead);
    if (requested == null) {
      return earliest;
    }
    if (!minLead.isZero() && requested.isBefore(earliest)) {
      throw new IllegalArgumentException(
          "a new price version must start at least "
              + minLead
              + " from now (pricing.min_lead), so that every replica knows it before it applies;"
              + " was "
              + requested
              + ", earliest "
              + earliest.truncatedTo(java.time.temporal.ChronoUnit.SECONDS).plusSeconds(1));
    }
    return requested;
  }

  public List<PriceVersion> listPrices() {
    return prices.list();
  }

  public Plan createPlan(String name, long includedNs) {
    return plans.create(name, includedNs);
  }

  /**
   * A plan with an overage price (null: the price book) and class weights in parts per million of
   * its pool (V20; see {@link Plans#create(String, long, Long, java.util.Map)}).
   */
  public Plan createPlan(
      String name,
      long includedNs,
      Long overagePriceMicrosPerSecond,
      java.util.Map<String, Long> classWeightsPpm) {
    return plans.create(name, includedNs, overagePriceMicrosPerSecond, classWeightsPpm);
  }

  public List<Plan> listPlans() {
    return plans.list();
  }

  /** The plan {@code account} is on now (its allowance is {@link #balance}'s), if any. */
  public Optional<Plan> currentPlan(String account) {
    return plans.current(account, clock.instant());
  }

  public Subscription assignPlan(String account, String plan, Instant from) {
    return plans.assign(account, plan, from);
  }

  public CreditGrant grantCredit(
      String account, String source, long amountMicros, Instant expiresAt, String note) {
    return credits.grant(account, source, amountMicros, expiresAt, note);
  }

  public List<CreditGrant> listCredits(String account) {
    return credits.list(account);
  }

  public Balance balance(String account) {
    return credits.balance(account);
  }

  /**
   * The balance of the account with this id.
   *
   * @throws IllegalArgumentException if there is no such account
   * @throws io.gpumeter.billing.BillingException if the database fails
   */
  public Balance balance(long accountId) {
    return credits.balance(accountId);
  }

  /** Books the remainder of expired grants as expiry entries; returns how many grants. */
  public int expireCredits() {
    return credits.expire();
  }

  /** Differences between cached remainders and the entries; empty when consistent. */
  public List<String> verifyBalances() {
    return credits.verifyBalances();
  }

  public Invoice invoice(String account, YearMonth month) {
    return invoices.show(account, month);
  }

  public List<Invoice> listInvoices(String account) {
    return invoices.list(account);
  }

  public InvoiceVerification verifyInvoice(String account, YearMonth month) {
    return invoices.verify(account, month);
  }

  public Invoice finalizeInvoice(String account, YearMonth month) {
    return invoices.finalize(account, month);
  }

  /**
   * The priced cost of a stored charge: exact (nano-micro-units) and rounded (micro-units), the
   * currency and the price version. Empty until the charge is stored, and for a charge no price
   * version covered.
   */
  public Optional<ChargeCost> chargeCost(String requestId) {
    return prices.chargeCost(requestId);
  }

  /** An invoice in {@code json}, {@code csv} or {@code html}. */
  public static String format(Invoice invoice, String format) {
    return switch (format) {
      case "json" -> InvoiceFormats.json(invoice);
      case "csv" -> InvoiceFormats.csv(invoice);
      case "html" -> InvoiceFormats.html(invoice);
      default ->
          throw new IllegalArgumentException(
              "format must be json, csv or html, was '" + format + "'");
    };
  }

  /** The rounding rule ({@link Money#roundToMicros}), for callers that show exact amounts. */
  public static long roundToMicros(BigInteger nanoMicros) {
    return Money.roundToMicros(nanoMicros);
  }

  /** Micro-units as a decimal string of currency units. */
  public static String decimal(long micros) {
    return Money.decimal(micros);
  }
}
