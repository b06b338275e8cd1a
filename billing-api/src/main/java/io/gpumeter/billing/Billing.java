package io.gpumeter.billing;

import java.util.Objects;

/**
 * The billing module wired together: the database, API keys, the ledger writer and usage
 * queries. Close it once: the ledger drains first, then the database stops.
 */
public final class Billing implements AutoCloseable {
  private final Database database;
  private final ApiKeys apiKeys;
  private final LedgerWriter ledger;
  private final UsageQueries usage;

  private Billing(Database database, LedgerConfig ledgerConfig) {
    this.database = database;
    this.apiKeys = new ApiKeys(database.dataSource());
    this.ledger = LedgerWriter.jdbc(database.dataSource(), ledgerConfig);
    this.usage = new UsageQueries(database.dataSource());
  }

  /**
   * Starts the database (see {@link Database#start}) and the ledger writer with default settings.
   */
  public static Billing start(DatabaseConfig databaseConfig) {
    return start(databaseConfig, LedgerConfig.defaults());
  }

  public static Billing start(DatabaseConfig databaseConfig, LedgerConfig ledgerConfig) {
    Objects.requireNonNull(ledgerConfig, "ledgerConfig");
    Database db = Database.start(databaseConfig);
    try {
      return new Billing(db, ledgerConfig);
    } catch (RuntimeException e) {
      db.close();
      throw e;
    }
  }

  public Database database() {
    return database;
  }

  public ApiKeys apiKeys() {
    return apiKeys;
  }

  public LedgerWriter ledger() {
    return ledger;
  }

  public UsageQueries usage() {
    return usage;
  }

  /** Flushes the ledger, then closes the pool and stops an embedded server. */
  @Override
  public void close() {
    try {
      ledger.close();
    } finally {
      database.close();
    }
  }
}
