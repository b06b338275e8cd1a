package io.gpumeter.billing.archfixture2;

import io.gpumeter.billing.archfixture1.Left;

/** ArchitectureTest fixture: the other half of a sub-package cycle. */
public class Right {
  Left other;
}
