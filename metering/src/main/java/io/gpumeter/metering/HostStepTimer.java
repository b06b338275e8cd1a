package io.gpumeter.metering;

import java.util.Objects;

/**
 * Host timer for CPU execution: a monotonic clock read before the step and after its outputs were
 * materialised on the host. On the CPU the step runs synchronously on the calling thread, so the
 * span is the device time.
 */
public final class HostStepTimer implements StepTimer {
  private final Ticker ticker;
  private final TimerInfo info;
  private final HostSpan span = new HostSpan();

  public HostStepTimer(Ticker ticker, TimerInfo info) {
    this.ticker = Objects.requireNonNull(ticker, "ticker");
    this.info = Objects.requireNonNull(info, "info");
  }

  /** A host timer on the system clock for the CPU device. */
  public static HostStepTimer cpu() {
    return new HostStepTimer(Ticker.system(), TimerInfo.cpu(CpuName.detect()));
  }

  @Override
  public Span begin() {
    if (span.open) {
      throw new IllegalStateException("previous span was not ended");
    }
    span.open = true;
    span.start = ticker.read();
    return span;
  }

  @Override
  public TimerInfo info() {
    return info;
  }

  /** Reused: one scheduler thread owns a timer and runs one step at a time. */
  private final class HostSpan implements Span {
    long start;
    boolean open;

    @Override
    public long end() {
      if (!open) {
        throw new IllegalStateException("span already ended");
      }
      open = false;
      return Math.max(0L, ticker.read() - start);
    }
  }
}
