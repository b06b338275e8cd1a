package io.gpumeter.billing.pricing;

import java.util.Currency;
import java.util.regex.Pattern;

/** ISO 4217 currency codes: the JDK's list of currencies is the reference. */
public final class Currencies {
  private static final Pattern CODE = Pattern.compile("[A-Z]{3}");

  private Currencies() {}

  /**
   * Returns {@code code} if it is an ISO 4217 currency code known to the JDK.
   *
   * @throws IllegalArgumentException naming the code otherwise
   */
  public static String require(String code) {
    if (code == null || !CODE.matcher(code).matches()) {
      throw new IllegalArgumentException(
          "currency must be an ISO 4217 code of three capital letters, was '" + code + "'");
    }
    try {
      Currency.getInstance(code);
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException("unknown currency '" + code + "' (not ISO 4217)", e);
    }
    return code;
  }
}
