package io.gpumeter.billing;

import io.gpumeter.billing.ledger.Outbox;

/** ArchitectureTest fixture: a root API type of billing-api reaching into a sub-package. */
public class ArchFixtureApiType {
  Outbox outbox;
}
