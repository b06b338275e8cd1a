package io.gpumeter.server;

/**
 * Whether the server may take traffic: ready only once every model is loaded and warmed, the
 * database is migrated and the listener is bound; not ready again from the moment shutdown begins.
 */
final class Readiness {
  private volatile String notReadyBecause = "starting";

  boolean isReady() {
    return notReadyBecause == null;
  }

  /** Why not ready, or null when ready. */
  String reason() {
    return notReadyBecause;
  }

  void ready() {
    notReadyBecause = null;
  }

  void notReady(String why) {
    notReadyBecause = why;
  }
}
