package io.gpumeter.billing;

/**
 * Bad input that is well-formed but conflicts with what is stored (a name taken, overlapping price
 * versions or subscriptions, an invoice final already or an earlier one still open): an {@link
 * IllegalArgumentException}, so the CLI treats it as bad input, while the admin API answers it with
 * 409. Nothing was changed.
 */
public final class ConflictException extends IllegalArgumentException {
  private static final long serialVersionUID = 1L;

  public ConflictException(String message) {
    super(message);
  }

  public ConflictException(String message, Throwable cause) {
    super(message, cause);
  }
}
