package io.gpumeter.billing.budget;

import io.gpumeter.billing.BillingException;
import io.gpumeter.billing.Budgets.Reservation;
import io.gpumeter.billing.InsufficientQuotaException;
import io.gpumeter.billing.budget.LeasedBudgets.DefaultMeter;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.function.LongSupplier;

/**
 * One account's lease on this replica and the reservations against it; see {@link LeasedBudgets}.
 * Every field is guarded by this object's monitor.
 *
 * <p>What may still be reserved, of each kind (allowance device-ns, credit nano-micro-units): the
 * lease, less what was settled since the snapshot the lease's funds were read after, less what is
 * reserved by requests in flight. Settled totals only grow; a renewal moves the base.
 */
final class AccountBudget {
  final long id;
  private final LongSupplier nanoTime;
  private final List<DefaultMeter> meters = new CopyOnWriteArrayList<>();

  private boolean known;
  private boolean retired;
  private boolean suspended;
  private boolean postpaid;
  private String currency;
  private long leaseAllowanceNs;
  private long leaseCreditNm;
  private long validUntilNanos;
  private long renewStartNanos;
  private long settledAllowanceNs;
  private long settledCreditNm;
  private long baseAllowanceNs;
  private long baseCreditNm;
  private long reservedAllowanceNs;
  private long reservedCreditNm;
  private int active;
  private long lastUsedNanos;

  // A grant begun and not yet installed (in flight, or failed at a commit whose outcome is not
  // known): what the new lease allows, against the settled totals of its snapshot. Reservations
  // and extensions must fit both the old lease and this one until a renewal installs its lease, so
  // whichever row the database holds covers them.
  private boolean granting;
  private long grantAllowanceNs;
  private long grantCreditNm;
  private long grantBaseAllowanceNs;
  private long grantBaseCreditNm;

  AccountBudget(long id, LongSupplier nanoTime) {
    this.id = id;
    this.nanoTime = nanoTime;
    this.lastUsedNanos = nanoTime.getAsLong();
  }

  /** What a renewal read before it went to the database. */
  record Snapshot(
      long startNanos,
      long settledAllowanceNs,
      long settledCreditNm,
      long reservedAllowanceNs,
      long reservedCreditNm) {}

  synchronized Snapshot snapshot(long now) {
    return new Snapshot(
        now, settledAllowanceNs, settledCreditNm, reservedAllowanceNs, reservedCreditNm);
  }

  /** The lease a renewal writes: allowance device-ns and credit nano-micro-units. */
  record Grant(long allowanceNs, long creditNm) {}

  /**
   * Sizes this replica's lease on the funds a renewal read (under the account's advisory lock, with
   * every other replica's unexpired lease already taken off {@code freeAllowanceNs} and {@code
   * freeCreditNm}), and holds reservations to it as well as to the old lease until a renewal's
   * {@link #leased} (a failed commit may or may not have written the row: both limits stay).
   *
   * <p>The lease asks for what is reserved <em>now</em> (not at the snapshot: reservations made
   * during the round trip count) plus {@code extraAllowanceNs}/{@code extraCreditNm} for a waiting
   * request; from here to the commit nothing may be reserved that the new lease would not cover.
   * Without that hold a reservation made against the old, larger lease while the new, smaller one
   * was being written would be covered by neither, and another replica could lease the same funds:
   * the overspend would no longer be bounded by one step per running request.
   */
  synchronized Grant beginGrant(
      Snapshot snap,
      long freeAllowanceNs,
      long freeCreditNm,
      int othersActive,
      long extraAllowanceNs,
      long extraCreditNm) {
    long needA =
        LeasedBudgets.satAdd(
            LeasedBudgets.satAdd(
                reservedAllowanceNs, settledAllowanceNs - snap.settledAllowanceNs()),
            extraAllowanceNs);
    long needC =
        LeasedBudgets.satAdd(
            LeasedBudgets.satAdd(reservedCreditNm, settledCreditNm - snap.settledCreditNm()),
            extraCreditNm);
    long leaseA = LeasedBudgets.share(freeAllowanceNs, othersActive, needA);
    long leaseC = LeasedBudgets.share(freeCreditNm, othersActive, needC);
    granting = true;
    grantAllowanceNs = leaseA;
    grantCreditNm = leaseC;
    grantBaseAllowanceNs = snap.settledAllowanceNs();
    grantBaseCreditNm = snap.settledCreditNm();
    return new Grant(leaseA, leaseC);
  }

  /** A renewal granted this lease on the funds read after {@code snap}. */
  synchronized void leased(
      Snapshot snap,
      boolean suspended,
      boolean postpaid,
      String currency,
      long allowanceNs,
      long creditNm,
      long validUntilNanos) {
    this.known = true;
    this.suspended = suspended;
    this.postpaid = postpaid;
    this.currency = currency;
    this.leaseAllowanceNs = allowanceNs;
    this.leaseCreditNm = creditNm;
    this.baseAllowanceNs = snap.settledAllowanceNs();
    this.baseCreditNm = snap.settledCreditNm();
    this.validUntilNanos = validUntilNanos;
    this.renewStartNanos = snap.startNanos();
    this.granting = false;
  }

  /** The account row does not exist (deleted under a live key): nothing can be reserved. */
  synchronized void unknownAccount(Snapshot snap) {
    this.known = false;
    this.renewStartNanos = snap.startNanos();
  }

  synchronized String currency() {
    return currency;
  }

  /** True unless a renewal started at or after {@code t} succeeded. */
  synchronized boolean renewedBefore(long t) {
    return !known || renewStartNanos - t < 0;
  }

  List<DefaultMeter> meters() {
    return meters;
  }

  synchronized boolean idleSince(long now, long idleNanos) {
    return active == 0 && now - lastUsedNanos > idleNanos;
  }

  /** Retires this state if still idle; a retired state is never reserved against again. */
  synchronized boolean retireIfIdle(long now, long idleNanos) {
    if (active == 0 && now - lastUsedNanos > idleNanos) {
      retired = true;
    }
    return retired;
  }

  synchronized long availableAllowanceNs() {
    long a = leaseAllowanceNs - (settledAllowanceNs - baseAllowanceNs) - reservedAllowanceNs;
    if (granting) {
      a =
          Math.min(
              a,
              grantAllowanceNs - (settledAllowanceNs - grantBaseAllowanceNs) - reservedAllowanceNs);
    }
    return a;
  }

  synchronized long availableCreditNm() {
    long c = leaseCreditNm - (settledCreditNm - baseCreditNm) - reservedCreditNm;
    if (granting) {
      c = Math.min(c, grantCreditNm - (settledCreditNm - grantBaseCreditNm) - reservedCreditNm);
    }
    return c;
  }

  /**
   * Whether the lease is still valid here. A limited reservation takes no step after its lease ran
   * out: another replica may hold those funds once the row expires in the database.
   */
  synchronized boolean leaseLive() {
    return !retired && nanoTime.getAsLong() - validUntilNanos <= 0;
  }

  /**
   * Reserves {@code estimateNs} on meter {@code m}.
   *
   * @param last false on the fast path: answer null for anything a renewal might change; true after
   *     a renewal: refuse instead
   * @throws InsufficientQuotaException suspended, or (last) the funds cannot cover the estimate
   * @throws BillingException (last) no valid lease or price could be had
   */
  synchronized Reservation tryReserve(DefaultMeter m, long estimateNs, long now, boolean last) {
    if (retired) {
      if (last) {
        throw new IllegalStateException("a retired budget state was used");
      }
      return null;
    }
    lastUsedNanos = now;
    if (!meters.contains(m)) {
      meters.add(m);
    }
    if (!known) {
      if (last) {
        throw new BillingException(
            "the budget of account " + id + " could not be read; nothing was generated");
      }
      return null;
    }
    if (suspended) {
      throw new InsufficientQuotaException(
          InsufficientQuotaException.Reason.SUSPENDED,
          "Your account is suspended, so requests are refused until it is resumed. Nothing was"
              + " generated or charged.");
    }
    long price = m.price(currency);
    if (price == -2) {
      if (last) {
        throw new BillingException("the price of model " + m.model + " could not be read");
      }
      return null;
    }
    if (price < 0 || postpaid) {
      // not charged in money (unpriced), or postpaid overage: funds never refuse it
      active++;
      return new LeasedReservation(this, price, 0, 0, true);
    }
    if (now - validUntilNanos > 0) {
      if (last) {
        throw new BillingException(
            "the budget lease of account "
                + id
                + " could not be renewed (the database is unreachable); retry later");
      }
      return null;
    }
    long allowance = Math.min(estimateNs, Math.max(0, availableAllowanceNs()));
    long credit = LeasedBudgets.satMul(estimateNs - allowance, price);
    if (credit <= availableCreditNm()) {
      reservedAllowanceNs += allowance;
      reservedCreditNm += credit;
      active++;
      return new LeasedReservation(this, price, allowance, credit, price == 0);
    }
    if (!last) {
      return null;
    }
    throw new InsufficientQuotaException(
        InsufficientQuotaException.Reason.EXHAUSTED,
        "Your account's included allowance and prepaid credits are exhausted: they cannot cover"
            + " this request's estimated "
            + estimateNs
            + " ns of device time on model "
            + m.model
            + ". Nothing was generated or charged; add credits or lower max_tokens.");
  }

  /** Grows {@code r} to cover {@code needNs}, or false when the lease cannot. */
  synchronized boolean extend(LeasedReservation r, long needNs) {
    if (r.settled || retired || nanoTime.getAsLong() - validUntilNanos > 0) {
      return false;
    }
    long shortNs = needNs - r.coveredNs;
    if (shortNs <= 0) {
      return true;
    }
    long allowance = Math.min(shortNs, Math.max(0, availableAllowanceNs()));
    long credit = LeasedBudgets.satMul(shortNs - allowance, r.price);
    if (credit > availableCreditNm()) {
      return false;
    }
    reservedAllowanceNs += allowance;
    reservedCreditNm += credit;
    r.allowanceNs += allowance;
    r.creditNm += credit;
    r.coveredNs = r.allowanceNs + r.creditNm / r.price;
    return true;
  }

  /** Releases {@code r} and counts its charge: allowance first, as the deduction takes it. */
  synchronized void settle(LeasedReservation r, long chargedNs) {
    if (r.settled) {
      return;
    }
    r.settled = true;
    active--;
    reservedAllowanceNs -= r.allowanceNs;
    reservedCreditNm -= r.creditNm;
    long charged = Math.max(0, chargedNs);
    if (r.price < 0) {
      return; // unpriced: the charge is not deducted
    }
    long allowance = postpaid ? 0 : Math.min(charged, r.allowanceNs);
    settledAllowanceNs += allowance;
    settledCreditNm =
        LeasedBudgets.satAdd(settledCreditNm, LeasedBudgets.satMul(charged - allowance, r.price));
  }

  /** A reservation against this account's lease. */
  static final class LeasedReservation implements Reservation {
    private final AccountBudget account;
    final long price;
    final boolean unlimited;
    long allowanceNs;
    long creditNm;
    volatile long coveredNs;
    boolean settled;

    LeasedReservation(
        AccountBudget account, long price, long allowanceNs, long creditNm, boolean unlimited) {
      this.account = account;
      this.price = price;
      this.allowanceNs = allowanceNs;
      this.creditNm = creditNm;
      this.unlimited = unlimited;
      this.coveredNs = unlimited ? Long.MAX_VALUE : allowanceNs + creditNm / price;
    }

    @Override
    public boolean mayStep(long usedNs, long nextStepNs) {
      if (unlimited) {
        return true;
      }
      long need = LeasedBudgets.satAdd(usedNs, nextStepNs);
      return need <= coveredNs ? account.leaseLive() : account.extend(this, need);
    }

    @Override
    public void settle(long chargedNs) {
      account.settle(this, chargedNs);
    }

    @Override
    public long priceMicrosPerSecond() {
      return price < 0 ? -1 : price;
    }

    @Override
    public String currency() {
      return account.currency();
    }
  }
}
