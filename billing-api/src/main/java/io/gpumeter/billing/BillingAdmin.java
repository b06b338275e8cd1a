package io.gpumeter.billing;

import io.gpumeter.billing.accounting.Accounting;
import io.gpumeter.billing.db.Database;
import io.gpumeter.billing.keys.ApiKeys;
import io.gpumeter.billing.ledger.Ledger;
import io.gpumeter.billing.reconcile.Reconciliation;
import java.nio.file.Path;
import java.time.Instant;
import java.util.List;

/**
 * The billing database for command-line tools: API keys (create, list, revoke, rotate) and
 * reconciliation reports, without the ledger, its outbox or any background task, so it can run
 * beside a serving process (with {@link DatabaseConfig#attachToRunningEmbedded()} it connects to
 * the embedded server that process runs).
 */
public final class BillingAdmin implements AutoCloseable {
  private final Database database;
  private final ApiKeys apiKeys;
  private final Reconciliation reconciliation;
  private final Accounting accounting;
  private final io.gpumeter.billing.usage.UsageQueries usage;

  private BillingAdmin(Database database) {
    this.database = database;
    this.apiKeys = new ApiKeys(database.dataSource());
    this.reconciliation = new Reconciliation(database.dataSource());
    this.accounting = new Accounting(database.dataSource(), java.time.Clock.systemUTC());
    this.usage = new io.gpumeter.billing.usage.UsageQueries(database.dataSource());
  }

  /**
   * Starts the database, or attaches to it, and migrates it.
   *
   * @throws BillingException if the database cannot be started, reached or migrated
   * @throws IllegalStateException if the embedded data folder is used by another process and
   *     attaching was not asked for
   */
  public static BillingAdmin open(DatabaseConfig config) {
    return new BillingAdmin(Database.start(config));
  }

  /**
   * Creates an API key for {@code account} (the account is created if new). The plaintext key is in
   * the result only.
   *
   * @throws IllegalArgumentException if the account name is not valid
   * @throws BillingException if the database fails
   */
  public CreatedApiKey createKey(String account) {
    return apiKeys.create(account);
  }

  /**
   * Creates a key of {@code scope} for {@code account} (created if new).
   *
   * @throws IllegalArgumentException if the account name is not valid
   * @throws BillingException if the database fails
   */
  public CreatedApiKey createKey(String account, KeyScope scope) {
    return apiKeys.create(account, scope);
  }

  /**
   * Creates a key of {@code scope} with {@code label} (null for none) for {@code account} (created
   * if new).
   *
   * @throws IllegalArgumentException if the account name or the label is not valid
   * @throws BillingException if the database fails
   */
  public CreatedApiKey createKey(String account, KeyScope scope, String label) {
    return apiKeys.create(account, scope, label);
  }

  /**
   * Keys of {@code account} (every key when null), oldest first; never their secrets.
   *
   * @throws IllegalArgumentException if the account name is not valid
   * @throws BillingException if the database fails
   */
  public List<ApiKeyInfo> listKeys(String account) {
    return apiKeys.list(account);
  }

  /**
   * Revokes a key. A server that has it cached accepts it for at most its {@code
   * auth.key_cache_ttl} more (revoke through the admin API to make it immediate there).
   *
   * @throws ApiKeyStateException if no key has this id, or it is already revoked
   * @throws BillingException if the database fails
   */
  public ApiKeyInfo revokeKey(long keyId) {
    return apiKeys.revoke(keyId);
  }

  /**
   * Replaces a key by a new one for the same account and revokes the old one at once, in one
   * transaction.
   *
   * @throws ApiKeyStateException if no key has this id, or it is already revoked
   * @throws BillingException if the database fails
   */
  public RotatedApiKey rotateKey(long keyId) {
    return apiKeys.rotate(keyId);
  }

  /**
   * The reconciliation report over {@code [from, to)}, widened to whole minutes.
   *
   * @throws IllegalArgumentException if {@code to} is not after {@code from}
   * @throws BillingException if the database fails
   */
  public ReconciliationReport reconcile(Instant from, Instant to) {
    return reconciliation.report(from, to);
  }

  /**
   * The reconciliation report over {@code [from, to)} of one replica's charges and measured time
   * ({@code replica}: an outbox owner id, see {@link Billing#replicaId()}); null for the whole
   * ledger.
   *
   * @throws IllegalArgumentException if {@code to} is not after {@code from}
   * @throws BillingException if the database fails
   */
  public ReconciliationReport reconcile(Instant from, Instant to, java.util.UUID replica) {
    return reconciliation.report(from, to, replica);
  }

  /**
   * Re-applies the charges set aside in the outbox at {@code outboxDirectory} (quarantined
   * segments, dead letters) while no server runs on it; see {@link Billing#replaySetAside()}.
   *
   * @throws IllegalStateException if a running server holds the outbox: use its {@code POST
   *     /admin/replay}
   * @throws BillingException if the database failed part-way (run it again)
   */
  public SetAsideReplay replaySetAside(Path outboxDirectory, LedgerConfig ledger) {
    return Ledger.replaySetAside(database.ledgerDataSource(), outboxDirectory, ledger);
  }

  /** The outbox folder of {@code ledger} for this database; see {@link Billing#outboxDirectory}. */
  public Path outboxDirectory(LedgerConfig ledger) {
    return Billing.outboxDirectory(database.config(), ledger);
  }

  /**
   * What the local commit log of {@code ledger} (beside its outbox folder, possibly a running
   * server's) holds that this database does not yet: read without changing the log. Empty when
   * there is no log.
   */
  public CommitLogBacklog commitLogBacklog(LedgerConfig ledger) {
    return io.gpumeter.billing.ledger.CommitLogBacklogReader.read(
        Ledger.commitLogDirectory(outboxDirectory(ledger)), database.ledgerDataSource());
  }

  /** The read side of the ledger (the {@code usage} command: a key's hourly usage). */
  public io.gpumeter.billing.usage.UsageQueries usage() {
    return usage;
  }

  /** Accounts, prices, plans, credits, balances and invoices. */
  public Accounting accounting() {
    return accounting;
  }

  /** Closes the pools, and stops the database if this object started it. */
  @Override
  public void close() {
    database.close();
  }
}
