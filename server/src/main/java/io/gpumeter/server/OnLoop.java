package io.gpumeter.server;

import io.netty.channel.EventLoop;
import java.util.concurrent.CompletableFuture;
import java.util.function.BiConsumer;

/**
 * Continuations that must run on a channel's event loop, without a needless hop.
 *
 * <p>{@code future.whenCompleteAsync(action, loop)} always queues a task on the loop, also when the
 * future is already complete and the caller is that loop (a cached authentication, a budget
 * reservation its lease covers, a balance already read): the request then waits for the loop's next
 * turn for nothing. Here the action runs at once on the thread that completes the future, or on the
 * caller's thread if the future is already complete, whenever that thread is the loop; only a
 * completion on another thread (the scheduler's result, the ledger writer's commit) is handed to
 * the loop, once. Either way the action runs on the loop, exactly once.
 */
final class OnLoop {
  private OnLoop() {}

  /**
   * Runs {@code action} on {@code loop} once {@code future} completes: inline when it completes (or
   * is already complete) on the loop itself, else as one task on the loop. An action that throws is
   * treated as {@code whenCompleteAsync} treats it: the exception is dropped (callers catch their
   * own).
   */
  static <T> void whenComplete(
      CompletableFuture<T> future,
      EventLoop loop,
      BiConsumer<? super T, ? super Throwable> action) {
    future.whenComplete(
        (value, error) -> {
          if (loop.inEventLoop()) {
            action.accept(value, error);
          } else {
            loop.execute(() -> action.accept(value, error));
          }
        });
  }
}
