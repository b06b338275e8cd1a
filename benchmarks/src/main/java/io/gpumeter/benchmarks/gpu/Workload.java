package io.gpumeter.benchmarks.gpu;

/**
 * A fixed piece of device work shaped like a model step: queue work on the device, then copy a
 * small result to the host (which waits for the work), as a step ends with its logits on the host.
 */
interface Workload extends AutoCloseable {
  /** Runs one step of {@code repeats} units of work and returns once its result is on the host. */
  void step(int repeats);

  /** What one unit is, for the report. */
  String describe();

  @Override
  void close();
}
