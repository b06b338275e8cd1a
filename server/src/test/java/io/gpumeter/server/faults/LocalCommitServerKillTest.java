package io.gpumeter.server.faults;

/**
 * {@link ServerKillTest} with {@code ledger.commit_point=local}: the server SIGKILLed while
 * PostgreSQL is down: the charges it answered are only in its commit log, and the next process
 * ships them once.
 */
class LocalCommitServerKillTest extends ServerKillTest {
  @Override
  String commitPoint() {
    return "local";
  }
}
