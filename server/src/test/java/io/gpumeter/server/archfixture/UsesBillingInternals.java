package io.gpumeter.server.archfixture;

import io.gpumeter.billing.db.Database;

/** ArchitectureTest fixture: server code using billing-api's machinery. */
public class UsesBillingInternals {
  Database database;
}
