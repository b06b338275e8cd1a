package io.gpumeter.server;

import java.nio.file.Path;
import java.util.Map;

/**
 * Loading and unloading models while the server runs ({@code POST /admin/models/load}, {@code POST
 * /admin/models/{id}/unload}); implemented by {@link GpumeterServer}. Both calls block (seconds):
 * run them on the blocking executor.
 */
interface ModelAdmin {
  /**
   * Loads and warms a model directory (system time, never charged), starts its scheduler and serves
   * it.
   *
   * @throws io.gpumeter.model.ModelException if the directory is not a valid model, its name is
   *     served already, or loading or warm-up fails; the models already served are unaffected
   */
  ModelEndpoint load(Path dir);

  /**
   * Stops admitting requests for the model (new ones get 404 {@code model_not_found}), waits for
   * its running sequences to finish (up to {@code server.shutdown_grace}; they are charged as
   * usual), then frees it.
   *
   * @return false if no model of that name is served
   */
  boolean unload(String name);

  /** Model directories that failed to load, with the reason. */
  Map<Path, String> failures();
}
