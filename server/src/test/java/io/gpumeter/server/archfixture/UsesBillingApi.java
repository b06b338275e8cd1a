package io.gpumeter.server.archfixture;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.keys.ApiKeys;
import io.gpumeter.billing.reconcile.Reconciliation;
import io.gpumeter.billing.usage.UsageQueries;

/** ArchitectureTest fixture: server code using only billing-api's public API. */
public class UsesBillingApi {
  Billing billing;
  ApiKeys keys;
  UsageQueries usage;
  Reconciliation reconciliation;
}
