package io.gpumeter.batching;

/**
 * Receives generated tokens on the scheduler thread. Must not block: hand off (for example to a
 * Netty event loop) and return.
 */
@FunctionalInterface
public interface TokenListener {
  TokenListener NONE = token -> {};

  void onToken(int token);
}
