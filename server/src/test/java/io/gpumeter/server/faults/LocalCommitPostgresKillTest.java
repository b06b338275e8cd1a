package io.gpumeter.server.faults;

/**
 * {@link PostgresKillTest} with {@code ledger.commit_point=local}: PostgreSQL SIGKILLed under load:
 * the commit log keeps the charges (ready, degraded) and ships each answered one once when it is
 * back.
 */
class LocalCommitPostgresKillTest extends PostgresKillTest {
  @Override
  String commitPoint() {
    return "local";
  }
}
