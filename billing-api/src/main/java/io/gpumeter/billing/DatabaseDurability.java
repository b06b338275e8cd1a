package io.gpumeter.billing;

import java.util.ArrayList;
import java.util.List;

/**
 * What the billing database says about its own durability, read with {@code SHOW} when billing
 * starts: whether a committed charge survives an OS crash or a power loss. Returned by {@link
 * Billing#databaseDurability()} and shown on {@code /readyz}.
 *
 * <p>A charge is safe from an OS crash only when {@code fsync} is on (commits reach the disk), and
 * the database is safe from a torn page only when {@code full_page_writes} is on; {@code
 * synchronous_commit=off} acknowledges a commit before its WAL is flushed. Any other value of
 * {@code synchronous_commit} ({@code on}, {@code local}, {@code remote_write}, {@code
 * remote_apply}) flushes the WAL locally before the commit returns.
 *
 * @param fsync the value of {@code fsync}
 * @param fullPageWrites the value of {@code full_page_writes}
 * @param synchronousCommit the value of {@code synchronous_commit}
 * @param unsafeAllowed the database is not {@link #safe() safe}, durable mode was asked for, and
 *     {@link DatabaseConfig#allowUnsafeDatabase()} let billing start anyway
 */
public record DatabaseDurability(
    String fsync, String fullPageWrites, String synchronousCommit, boolean unsafeAllowed) {

  /** True when all three settings let a committed transaction survive an OS crash. */
  public boolean safe() {
    return problems().isEmpty();
  }

  /** The settings that are off, as {@code name=value}; empty when {@link #safe()}. */
  public List<String> problems() {
    List<String> off = new ArrayList<>(3);
    if (!"on".equals(fsync)) {
      off.add("fsync=" + fsync);
    }
    if (!"on".equals(fullPageWrites)) {
      off.add("full_page_writes=" + fullPageWrites);
    }
    if (synchronousCommit == null || "off".equals(synchronousCommit)) {
      off.add("synchronous_commit=" + synchronousCommit);
    }
    return off;
  }

  DatabaseDurability withUnsafeAllowed() {
    return new DatabaseDurability(fsync, fullPageWrites, synchronousCommit, true);
  }
}
