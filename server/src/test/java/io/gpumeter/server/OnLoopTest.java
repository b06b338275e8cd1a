package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.netty.channel.DefaultEventLoop;
import io.netty.channel.EventLoop;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** {@link OnLoop}: on the loop always, inline when it can be, never a needless task. */
class OnLoopTest {
  private final EventLoop loop = new DefaultEventLoop();

  @AfterEach
  void stop() {
    loop.shutdownGracefully(0, 1, TimeUnit.SECONDS).syncUninterruptibly();
  }

  @Test
  void aCompleteFutureContinuesInlineOnTheLoopBeforeTheCallerGoesOn() throws Exception {
    List<String> order =
        loop.submit(
                () -> {
                  List<String> seen = new ArrayList<>();
                  OnLoop.whenComplete(
                      CompletableFuture.completedFuture("cached"),
                      loop,
                      (v, e) -> seen.add(v + " on loop " + loop.inEventLoop()));
                  seen.add("caller goes on");
                  return seen;
                })
            .get(10, TimeUnit.SECONDS);
    // with whenCompleteAsync(loop) the continuation would be a task after the caller's
    assertThat(order).containsExactly("cached on loop true", "caller goes on");
  }

  @Test
  void aFutureCompletedOnAnotherThreadContinuesOnTheLoop() throws Exception {
    CompletableFuture<String> future = new CompletableFuture<>();
    CompletableFuture<String> where = new CompletableFuture<>();
    loop.submit(
            () ->
                OnLoop.whenComplete(
                    future, loop, (v, e) -> where.complete(v + " on loop " + loop.inEventLoop())))
        .get(10, TimeUnit.SECONDS);
    Thread other = new Thread(() -> future.complete("result"), "scheduler-like");
    other.start();
    other.join(10_000);
    assertThat(where.get(10, TimeUnit.SECONDS)).isEqualTo("result on loop true");
  }

  @Test
  void aFailureIsHandedOnWithTheSameRules() throws Exception {
    CompletableFuture<String> where = new CompletableFuture<>();
    OnLoop.whenComplete(
        CompletableFuture.failedFuture(new IllegalStateException("refused")),
        loop,
        (v, e) -> where.complete(e.getMessage() + " on loop " + loop.inEventLoop()));
    // called from the test thread, not the loop: handed to the loop
    assertThat(where.get(10, TimeUnit.SECONDS)).isEqualTo("refused on loop true");
  }
}
