package io.gpumeter.billing.archfixture1;

import io.gpumeter.billing.Billing;
import io.gpumeter.billing.archfixture2.Right;

/**
 * ArchitectureTest fixture: a billing sub-package in a cycle with another, and using the facade.
 */
public class Left {
  Right other;
  Billing facade;
}
