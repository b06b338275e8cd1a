package io.gpumeter.billing;

/**
 * Bad input that names something that does not exist (an account, a plan): an {@link
 * IllegalArgumentException}, so callers that only know that one (the CLI) treat it as bad input,
 * while the admin API answers it with 404 and the code {@code <resource>_not_found}. Nothing was
 * changed.
 */
public final class NotFoundException extends IllegalArgumentException {
  private static final long serialVersionUID = 1L;

  private final String resource;

  /**
   * @param resource what is missing, one lower-case word: {@code account}, {@code plan}
   */
  public NotFoundException(String resource, String message) {
    super(message);
    this.resource = resource;
  }

  /** What is missing: {@code account} or {@code plan}. */
  public String resource() {
    return resource;
  }
}
