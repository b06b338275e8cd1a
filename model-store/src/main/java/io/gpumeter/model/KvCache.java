package io.gpumeter.model;

/** Key/value cache storage on the model's device. Released with {@link #close()}. */
public interface KvCache extends AutoCloseable {
  int slots();

  /** Bytes held on the device. */
  long bytes();

  @Override
  void close();
}
