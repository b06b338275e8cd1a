package io.gpumeter.billing;

import java.time.Instant;
import java.util.Objects;

/**
 * Administration of the billing database for the command-line tools: only the database, never
 * the ledger writer or the outbox, so a tool can run beside a server. With {@link
 * DatabaseConfig#attachToRunningEmbedded()} a tool reaches the PostgreSQL of a server running on
 * the same embedded data folder instead of starting its own.
 */
public final class BillingAdmin implements AutoCloseable {
  private final Database database;
  private final ApiKeys apiKeys;
  private final Reconciliation reconciliation;

  private BillingAdmin(Database database) {
    this.database = database;
    this.apiKeys = new ApiKeys(database.dataSource());
    this.reconciliation = new Reconciliation(database.dataSource());
  }

  /**
   * Starts (or attaches to) the database and migrates it; no ledger, no outbox.
   *
   * @throws BillingException if the database cannot be started, reached or migrated
   */
  public static BillingAdmin open(DatabaseConfig config) {
    return new BillingAdmin(Database.start(Objects.requireNonNull(config, "config")));
  }

  /**
   * Creates a key for {@code account}, creating the account if it does not exist.
   *
   * @return the new key; its plaintext cannot be retrieved again
   * @throws IllegalArgumentException if the name is blank or longer than 200 characters
   * @throws BillingException if the database fails
   */
  public CreatedApiKey createKey(String account) {
    return apiKeys.create(account);
  }

  /**
   * Reconciliation over {@code [from, to)}, widened to whole UTC minutes.
   *
   * @throws IllegalArgumentException if {@code to} is not after {@code from}
   * @throws BillingException if the database fails
   */
  public ReconciliationReport reconcile(Instant from, Instant to) {
    return reconciliation.report(from, to);
  }

  /** Closes the pools, then stops the embedded database if this started it. Idempotent. */
  @Override
  public void close() {
    database.close();
  }
}
