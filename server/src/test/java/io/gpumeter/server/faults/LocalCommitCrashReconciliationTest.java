package io.gpumeter.server.faults;

/**
 * {@link CrashReconciliationTest} with {@code ledger.commit_point=local}: a server SIGKILLed under
 * load reconciles with zero drift after a restart that ships its commit log.
 */
class LocalCommitCrashReconciliationTest extends CrashReconciliationTest {
  @Override
  String commitPoint() {
    return "local";
  }
}
