package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import io.gpumeter.billing.Account;
import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.Balance;
import io.gpumeter.billing.CreditGrant;
import io.gpumeter.billing.Plan;
import io.gpumeter.billing.accounting.Accounting;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.io.IOException;
import java.math.BigInteger;
import java.time.Clock;
import java.time.Instant;
import java.time.YearMonth;
import java.time.ZoneOffset;
import java.util.List;
import java.util.Locale;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.Executor;

/**
 * {@code GET /v1/organization/balance}: what the caller's account has left to spend, from
 * billing-api {@link Accounting} (server/README.md, "Balance"). Readable by {@code account_admin}
 * keys only (it is the whole account's; an inference key gets 403 {@code insufficient_scope}).
 *
 * <p><b>Plan:</b> the plan the account is on now and its allowance of the current UTC month. A plan
 * is one pool of device time over every device class (DESIGN.md, "Money"), so {@code included}
 * holds one entry with {@code device_class: "*"}; its {@code used_device_ns} is the allowance the
 * month's charges used ({@code Balance.allowanceUsedNs}).
 *
 * <p><b>Credits:</b> every grant with what is left of it (its exact remainder rounded once by the
 * one rule, {@link Accounting#roundToMicros}); {@code credit_remaining_micros} is the exact sum of
 * the remainders of the grants that have not expired, rounded once. A grant past its expiry is
 * listed with {@code expired: true} and spends nothing (deduction skips it) even before the
 * maintenance job books its expiry.
 */
final class BalanceEndpoint {
  static final String PATH = "/v1/organization/balance";

  private final Authenticator auth;
  private final Accounting accounting;
  private final Executor blocking;
  private final Clock clock;

  BalanceEndpoint(Authenticator auth, Accounting accounting, Executor blocking, Clock clock) {
    this.auth = auth;
    this.accounting = accounting;
    this.blocking = blocking;
    this.clock = clock;
  }

  void handle(Exchange ex) {
    ex.then(auth.authenticate(ex), principal -> show(ex, principal));
  }

  private void show(Exchange ex, ApiKeyPrincipal principal) {
    OrganizationReads.requireAccountAdmin(principal, "the balance");
    OrganizationReads.onlyParameters(ex, Set.of());
    String name = principal.accountName();
    ex.then(
        OrganizationReads.read(
            blocking,
            "The balance",
            () -> {
              Instant now = clock.instant();
              return new Read(
                  accounting.account(name),
                  accounting.balance(name),
                  accounting.currentPlan(name),
                  accounting.listCredits(name),
                  now);
            }),
        r -> ex.respondJson(HttpResponseStatus.OK, g -> write(g, r)));
  }

  private record Read(
      Account account,
      Balance balance,
      Optional<Plan> plan,
      List<CreditGrant> credits,
      Instant now) {}

  private static void write(JsonGenerator g, Read r) throws IOException {
    g.writeStartObject();
    g.writeStringField("object", "balance");
    g.writeStringField("account", r.account().name());
    g.writeStringField("currency", r.account().currency().toLowerCase(Locale.ROOT));
    if (r.plan().isEmpty()) {
      g.writeNullField("plan");
    } else {
      YearMonth month = YearMonth.from(r.now().atZone(ZoneOffset.UTC));
      long included = r.balance().allowanceIncludedNs();
      long used = r.balance().allowanceUsedNs();
      g.writeObjectFieldStart("plan");
      g.writeStringField("name", r.plan().get().name());
      g.writeNumberField(
          "period_start", month.atDay(1).atStartOfDay().toEpochSecond(ZoneOffset.UTC));
      g.writeNumberField(
          "period_end", month.plusMonths(1).atDay(1).atStartOfDay().toEpochSecond(ZoneOffset.UTC));
      g.writeArrayFieldStart("included");
      g.writeStartObject();
      g.writeStringField("device_class", "*");
      g.writeNumberField("included_device_ns", included);
      g.writeNumberField("used_device_ns", used);
      g.writeNumberField("remaining_device_ns", Math.max(0, included - used));
      g.writeEndObject();
      g.writeEndArray();
      Plan p = r.plan().get();
      g.writeObjectFieldStart("class_weights_ppm");
      for (java.util.Map.Entry<String, Long> w :
          new java.util.TreeMap<>(p.classWeightsPpm()).entrySet()) {
        g.writeNumberField(w.getKey(), w.getValue());
      }
      g.writeEndObject();
      if (p.overagePriceMicrosPerSecond() == null) {
        g.writeNullField("overage_price_micros_per_device_second");
      } else {
        g.writeNumberField(
            "overage_price_micros_per_device_second", p.overagePriceMicrosPerSecond());
      }
      g.writeEndObject();
    }
    BigInteger spendable = BigInteger.ZERO;
    g.writeArrayFieldStart("credits");
    for (CreditGrant c : r.credits()) {
      boolean expired = c.expiresAt() != null && !c.expiresAt().isAfter(r.now());
      if (!expired) {
        spendable = spendable.add(c.remainingNanoMicros());
      }
      long remaining = Accounting.roundToMicros(c.remainingNanoMicros());
      g.writeStartObject();
      g.writeNumberField("id", c.id());
      g.writeStringField("kind", c.source());
      g.writeNumberField("granted_micros", c.amountMicros());
      g.writeStringField("granted", Accounting.decimal(c.amountMicros()));
      g.writeNumberField("remaining_micros", remaining);
      g.writeStringField("remaining", Accounting.decimal(remaining));
      if (c.expiresAt() == null) {
        g.writeNullField("expires_at");
      } else {
        g.writeNumberField("expires_at", c.expiresAt().getEpochSecond());
      }
      g.writeBooleanField("expired", expired);
      g.writeNumberField("granted_at", c.grantedAt().getEpochSecond());
      g.writeEndObject();
    }
    g.writeEndArray();
    long creditRemaining = Accounting.roundToMicros(spendable);
    g.writeNumberField("credit_remaining_micros", creditRemaining);
    g.writeStringField("credit_remaining", Accounting.decimal(creditRemaining));
    g.writeBooleanField("postpaid_allowed", r.account().postpaidAllowed());
    g.writeEndObject();
  }
}
