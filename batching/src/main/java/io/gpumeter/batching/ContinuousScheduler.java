package io.gpumeter.batching;

import io.gpumeter.metering.Apportioner;
import io.gpumeter.metering.DeviceTimeCounters;
import io.gpumeter.metering.MutableStepReport;
import io.gpumeter.metering.StepReport;
import io.gpumeter.metering.StepTimer;
import io.gpumeter.metering.Ticker;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.metering.UsageSink;
import io.gpumeter.metering.UsageStatus;
import io.gpumeter.metering.WeightPolicy;
import io.gpumeter.model.KvCache;
import io.gpumeter.model.KvFootprint;
import io.gpumeter.model.LanguageModel;
import io.gpumeter.model.StepBatch;
import java.time.Clock;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.function.Consumer;
import java.util.function.Predicate;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Iteration-level (continuous) batching scheduler for one model on one device.
 *
 * <p><b>Concurrency:</b> any thread may {@link #submit} or {@link Generation#cancel()}; everything
 * else, including every call into the model, happens on one scheduler thread. Submissions go
 * through a lock-free inbox ({@link ConcurrentLinkedQueue}) and wake the thread with {@link
 * LockSupport#unpark}; a single {@link AtomicInteger} bounds the number waiting (full: {@link
 * AdmissionRejectedException.Reason#QUEUE_FULL}, mapped to 429), and a count per API key in {@link
 * KeyShares} bounds each key's share of it ({@link SchedulerConfig#maxQueuedPerKey()}), so one key
 * flooding the server is refused before the queue is full for the others (the replicas of a model
 * share one {@link KeyShares}, so the share holds for the model). Cancellation is a volatile flag
 * read at the next step. Result futures are completed on the scheduler thread, so their dependants
 * must hand off and never block.
 *
 * <p><b>The step loop:</b> each iteration (1) drains the inbox into the per-key {@link FairQueue},
 * (2) retires cancelled and timed-out sequences, waiting or running, (3) admits waiting requests
 * into free KV cache slots, (4) builds one packed step: every running sequence that is decoding
 * contributes its last token first, then sequences still in their prompt contribute chunks of at
 * most {@code prefillChunk} tokens in admission order while the step's token budget lasts (so a
 * long prompt never stalls decoding), (5) runs and times the step, (6) splits the measured time
 * with the {@link Apportioner} by the {@link WeightPolicy} and fills in the step's {@link
 * StepReport}, (7) samples, emits (the request's {@link TokenListener}, on this thread) and
 * finishes (end-of-sequence, a stop string by the request's {@link StopCondition}, or the length
 * limit). The batch is rebuilt at every step: new requests join at the next step and finished ones
 * leave at once. When idle the thread parks; the first arrival's step runs at once (with continuous
 * batching a request arriving a moment later joins at the next step, so waiting for company only
 * adds latency), unless {@code batchWindowNanos} is set (default 0), in which case the first
 * arrival after idle waits that long for company.
 *
 * <p><b>Failure of the device:</b> {@link #fail} takes the scheduler out of service from any
 * thread, also from a {@link StepListener} that sees a failed step (the {@link ReplicaRouter} does
 * this for a model with several replicas): the loop stops at once, and every request still on it,
 * running or waiting, ends with {@link FinishReason#ERROR} and that cause, charged for the steps it
 * ran. {@link #failNextStep} injects a model error into the next step (tests, drills).
 *
 * <p><b>Fairness:</b> waiting requests are queued per API key in a {@link FairQueue}, and keys take
 * turns at admission. A key flooding the server therefore gets one admission per turn, like any
 * other key with work waiting; a key with one request waits at most one turn per free slot.
 *
 * <p><b>Choices ({@code n > 1}):</b> a request for {@code n} choices is admitted only when {@code
 * n} slots are free (until then it waits at the head of the line, so the slots it needs are not
 * taken by later arrivals). Its prompt is prefilled once, by choice 0, in its own slot; when the
 * prompt is done, its keys and values are copied on the device into the other choices' slots
 * ({@link LanguageModel#copyPrefix}), each other choice draws its first token from the same last
 * logits with its own seeded generator, and all {@code n} then decode as ordinary sequences. The
 * copy is timed like a step and reported as a step of its own with one row, choice 0's, as prefill
 * time. The request ends when its last choice ends, with one {@link UsageRecord}: the sum of every
 * choice's shares (the one prefill and the copy included), all choices' tokens, all their steps.
 *
 * <p><b>Several prompts:</b> a request of {@code P} prompts ({@link
 * GenerationRequest#morePrompts()}) is admitted when {@code P × n} slots are free; each prompt is
 * prefilled once by its own choice 0 (index {@code p × n}) and forked as above, all prompts in the
 * same steps. Every choice asks its own {@link StopCondition} ({@link StopCondition#forChoice}).
 * The one record sums every choice's shares, and its prompt tokens and KV memory-time are the sum
 * over the prompts. A request that asks for its prompt's logprobs prefills it one token per step
 * (the model returns a sequence's last position only), reading each step's logits for the next
 * prompt token.
 *
 * <p><b>Accounting:</b> the step timer's span is closed in {@code finally}, so a failing step is
 * still measured and split among its sequences (which then fail with their time on the record).
 * Each step fills in the one reused {@link MutableStepReport} (measured time, the shares, their
 * sum), and everything downstream reads that report: the {@link DeviceTimeCounters}, the {@link
 * StepListener} (the server's reconciliation feed), and each sequence's running totals, from which
 * its {@link UsageRecord} is made. Nobody adds the shares up again. The report is handed out
 * synchronously and overwritten at the next step, so the loop allocates nothing per step for it. A
 * sequence's time is the sum of its shares; prefill and decode shares are kept apart. Its KV
 * memory-time ({@link KvMeter}: cached bytes after each step × that step's measured ns) and peak KV
 * bytes are kept beside them and go on the record. Every sequence, however it ends (done,
 * cancelled, timed out, failed, shut down), gets exactly one {@link UsageRecord}, published to the
 * {@link UsageSink} before its result completes.
 */
public final class ContinuousScheduler implements GenerationService, AutoCloseable {
  private static final Logger log = LoggerFactory.getLogger(ContinuousScheduler.class);
  private static final long IDLE_PARK_NANOS = TimeUnit.MILLISECONDS.toNanos(50);

  /** Choice i of a request draws from seed + i * this (the golden ratio, as SplittableRandom). */
  private static final long CHOICE_SEED_STRIDE = 0x9E3779B97F4A7C15L;

  private final LanguageModel model;
  private final StepTimer timer;
  private final DeviceTimeCounters counters;
  private final UsageSink sink;
  private final SchedulerConfig config;
  private final Ticker ticker;
  private final Clock clock;
  private final StepListener stepListener;
  private final String modelName;
  private final String policyName;
  private final int contextLength;
  private final int vocabSize;

  /** {@code eos[id]}: the id ends a sequence (a model may have several eos ids). */
  private final boolean[] eos;

  private final long kvBytesPerToken;

  private final ConcurrentLinkedQueue<Seq> inbox = new ConcurrentLinkedQueue<>();
  private final AtomicInteger queued = new AtomicInteger();
  private final KeyShares keyShares;

  /** Tokens the waiting requests stand for (prompt + max_tokens × n each): the router's load. */
  private final AtomicLong waitingTokens = new AtomicLong();

  private final AtomicLong rejected = new AtomicLong();
  private volatile boolean accepting = true;

  /** Set by {@link #fail}: every request still here ends with this error. */
  private volatile Throwable failCause;

  /** A fault injected by {@link #failNextStep}: the next step throws it instead of running. */
  private volatile RuntimeException injectedFault;

  /** Set when the loop has ended; a submission that sees it takes its request back. */
  private volatile boolean terminated;

  private volatile long drainDeadline = Long.MAX_VALUE;
  private volatile boolean stopRequested;
  private final Thread thread;

  // ---- scheduler-thread state ----
  private final FairQueue<Seq> waiting = new FairQueue<>();
  private long retireNow; // the time retireExpired judges waiting sequences by
  private final Predicate<Seq> expiredWhileWaiting = this::expiredWhileWaiting;
  private final Consumer<Seq> retireWaiting = this::retireWaiting;
  private final Consumer<Seq> cancelWaiting = this::cancelWaiting;
  private final Seq[] running;
  private int runningCount;
  private final int[] freeSlots;
  private int freeSlotCount;
  private final KvCache cache;
  private final StepBatch batch;
  private final float[][] logits;
  private final Seq[] stepSeqs;
  private final boolean[] stepPrefill;
  private final int[] stepLen;
  private final long[] weights;
  private final long[] shares;
  private final long[] scratch;
  private final MutableStepReport report;
  private final Sampler sampler;
  private final LogSoftmax logSoftmax;

  /** A step row's raw logits, kept for logprobs while the sampler overwrites the row. */
  private final float[] logprobScratch;

  /**
   * A request of {@code n > 1} choices taken from the queue that waits for {@code n} free slots.
   */
  private Seq held;

  /** The one share of a prefix copy (n > 1), and the row a forked choice samples its first from. */
  private final long[] forkShare = new long[1];

  private final float[] forkScratch;

  // ---- figures, written by the scheduler thread ----
  private volatile int runningFigure;
  private volatile long stepsFigure;
  private volatile long lastStepNs;
  private volatile int lastBatchSize;
  private volatile int lastStepTokens;
  private final AtomicLong completed = new AtomicLong();

  /**
   * Creates and starts a scheduler. The model must already be loaded and warmed; the scheduler owns
   * its KV cache, not the model.
   */
  public ContinuousScheduler(
      LanguageModel model,
      StepTimer timer,
      DeviceTimeCounters counters,
      UsageSink sink,
      SchedulerConfig config,
      Ticker ticker,
      Clock clock,
      StepListener stepListener) {
    this(
        model,
        timer,
        counters,
        sink,
        config,
        ticker,
        clock,
        stepListener,
        KeyShares.of(config),
        "scheduler-" + model.config().name());
  }

  /**
   * As the other constructor, for one replica of a model among several: {@code keyShares} is shared
   * by the model's replicas (the per-key share of the queue holds for the model as a whole), and
   * the thread is named {@code threadName}.
   */
  public ContinuousScheduler(
      LanguageModel model,
      StepTimer timer,
      DeviceTimeCounters counters,
      UsageSink sink,
      SchedulerConfig config,
      Ticker ticker,
      Clock clock,
      StepListener stepListener,
      KeyShares keyShares,
      String threadName) {
    this.keyShares = Objects.requireNonNull(keyShares, "keyShares");
    this.model = Objects.requireNonNull(model, "model");
    this.timer = Objects.requireNonNull(timer, "timer");
    this.counters = Objects.requireNonNull(counters, "counters");
    this.sink = Objects.requireNonNull(sink, "sink");
    this.config = Objects.requireNonNull(config, "config");
    this.ticker = Objects.requireNonNull(ticker, "ticker");
    this.clock = Objects.requireNonNull(clock, "clock");
    this.stepListener = Objects.requireNonNull(stepListener, "stepListener");
    this.modelName = model.config().name();
    this.policyName = config.weightPolicy().describe();
    this.contextLength = model.config().contextLength();
    this.vocabSize = model.config().vocabSize();
    this.eos = new boolean[vocabSize];
    for (int id : model.config().eosIds()) {
      eos[id] = true;
    }
    this.kvBytesPerToken = KvFootprint.bytesPerToken(model.config());
    int slots = config.maxRunning();
    this.running = new Seq[slots];
    this.freeSlots = new int[slots];
    for (int i = 0; i < slots; i++) {
      freeSlots[i] = slots - 1 - i; // pop order 0, 1, 2, ...
    }
    this.freeSlotCount = slots;
    this.cache = model.newCache(slots);
    this.batch = new StepBatch(config.maxTokensPerStep(), slots);
    this.logits = new float[slots][vocabSize];
    this.stepSeqs = new Seq[slots];
    this.stepPrefill = new boolean[slots];
    this.stepLen = new int[slots];
    this.weights = new long[slots];
    this.shares = new long[slots];
    this.scratch = new long[2 * slots];
    this.report = new MutableStepReport(modelName, timer.info().device(), slots);
    this.sampler = new Sampler(vocabSize);
    this.logSoftmax = new LogSoftmax(vocabSize);
    this.logprobScratch = new float[vocabSize];
    this.forkScratch = new float[vocabSize];
    this.thread = new Thread(this::loop, threadName);
    this.thread.setDaemon(true);
    this.thread.start();
  }

  /** A scheduler on the system clocks, with no step listener. */
  public static ContinuousScheduler start(
      LanguageModel model,
      StepTimer timer,
      DeviceTimeCounters counters,
      UsageSink sink,
      SchedulerConfig config) {
    return new ContinuousScheduler(
        model,
        timer,
        counters,
        sink,
        config,
        Ticker.system(),
        Clock.systemUTC(),
        StepListener.NONE);
  }

  public String modelName() {
    return modelName;
  }

  public SchedulerConfig config() {
    return config;
  }

  public DeviceTimeCounters counters() {
    return counters;
  }

  @Override
  public Generation submit(GenerationRequest request) {
    return submit(request, StepGuard.NONE);
  }

  @Override
  public Generation submit(GenerationRequest request, StepGuard guard) {
    Objects.requireNonNull(guard, "guard");
    if (!accepting) {
      rejected.incrementAndGet();
      throw new AdmissionRejectedException(
          AdmissionRejectedException.Reason.SHUTTING_DOWN,
          "model " + modelName + " is shutting down");
    }
    for (int p = 0; p < request.promptCount(); p++) {
      int prompt = request.prompt(p).length;
      if ((long) prompt + request.maxTokens() > contextLength) {
        rejected.incrementAndGet();
        throw new AdmissionRejectedException(
            AdmissionRejectedException.Reason.TOO_LONG,
            "this model's maximum context length is "
                + contextLength
                + " tokens; the prompt"
                + (request.promptCount() > 1 ? " at index " + p : "")
                + " has "
                + prompt
                + " tokens and max_tokens is "
                + request.maxTokens());
      }
      for (int t : request.prompt(p)) {
        if (t < 0 || t >= vocabSize) {
          throw new IllegalArgumentException(
              "token id " + t + " outside vocabulary of " + vocabSize);
        }
      }
    }
    if (request.n() > config.maxRunning()) {
      rejected.incrementAndGet();
      throw new IllegalArgumentException(
          "n is "
              + request.n()
              + " but model "
              + modelName
              + " runs at most "
              + config.maxRunning()
              + " sequences at a time");
    }
    for (int t : request.sampling().biasTokens()) {
      if (t >= vocabSize) {
        throw new IllegalArgumentException(
            "logit bias token id " + t + " outside vocabulary of " + vocabSize);
      }
    }
    if (!keyShares.tryAcquire(request.apiKeyId())) {
      rejected.incrementAndGet();
      throw new AdmissionRejectedException(
          AdmissionRejectedException.Reason.QUEUE_FULL,
          "this API key already has "
              + keyShares.maxPerKey()
              + " requests waiting for model "
              + modelName
              + " (its share of the queue); retry later");
    }
    if (queued.incrementAndGet() > config.queueCapacity()) {
      queued.decrementAndGet();
      keyShares.release(request.apiKeyId());
      rejected.incrementAndGet();
      throw new AdmissionRejectedException(
          AdmissionRejectedException.Reason.QUEUE_FULL,
          "model "
              + modelName
              + " has "
              + config.queueCapacity()
              + " requests waiting; retry later");
    }
    long now = ticker.read();
    long timeout =
        request.timeoutNanos() > 0 ? request.timeoutNanos() : config.defaultTimeoutNanos();
    Seq seq = new Seq(this, request, now, saturatedAdd(now, timeout), clock.instant());
    seq.guard = guard;
    waitingTokens.addAndGet(seq.waitingTokens());
    inbox.add(seq);
    if (terminated && inbox.remove(seq)) {
      // the loop ended (shut down or failed) after the check above and will not see it
      leaveQueue(seq);
      rejected.incrementAndGet();
      throw new AdmissionRejectedException(
          AdmissionRejectedException.Reason.SHUTTING_DOWN,
          "model " + modelName + " on " + timer.info().device() + " stopped serving");
    }
    LockSupport.unpark(thread);
    return seq;
  }

  /** A waiting request left the queue: admitted, retired, cancelled or taken back. */
  private void leaveQueue(Seq s) {
    queued.decrementAndGet();
    keyShares.release(s.request.apiKeyId());
    waitingTokens.addAndGet(-s.waitingTokens());
  }

  /**
   * Tokens the requests waiting here stand for: each one's prompt plus {@code max_tokens} for each
   * of its choices. The router sends a request to the replica with the fewest.
   */
  public long waitingTokens() {
    return waitingTokens.get();
  }

  /** Which timer and device this scheduler measures with. */
  public io.gpumeter.metering.TimerInfo timerInfo() {
    return timer.info();
  }

  /**
   * The label of the device this scheduler runs on ({@code cpu}, {@code cpu:N}, {@code cuda:N}).
   */
  public String device() {
    return timer.info().device();
  }

  /**
   * Takes this scheduler out of service at once: it admits nothing more, and every request on it,
   * running or waiting, ends at its next step with {@link FinishReason#ERROR} and {@code cause},
   * charged for the steps it ran. Does not wait (it may be called on the scheduler thread, from a
   * {@link StepListener}); {@link #shutdown} then only joins the thread.
   */
  public void fail(Throwable cause) {
    Objects.requireNonNull(cause, "cause");
    failCause = cause;
    accepting = false;
    stopRequested = true;
    LockSupport.unpark(thread);
  }

  /** The error this scheduler was taken out of service with ({@link #fail}), else null. */
  public Throwable failure() {
    return failCause;
  }

  /**
   * Fault injection (tests, drills): the next step, instead of calling the model, throws {@code
   * fault}, as a model error would. The step is still timed and its time split among its sequences,
   * which fail with it.
   */
  public void failNextStep(RuntimeException fault) {
    injectedFault = Objects.requireNonNull(fault, "fault");
    LockSupport.unpark(thread);
  }

  @Override
  public SchedulerStats stats() {
    return new SchedulerStats(
        queued.get(),
        runningFigure,
        stepsFigure,
        lastStepNs,
        lastBatchSize,
        lastStepTokens,
        completed.get(),
        rejected.get());
  }

  /** Refuses new submissions from now on (the first half of {@link #shutdown}); never blocks. */
  public void stopAdmitting() {
    accepting = false;
  }

  /**
   * Stops admitting, lets running and waiting work finish for up to {@code grace}, then cancels
   * what is left (each still gets its record) and releases the KV cache.
   */
  public void shutdown(long grace, TimeUnit unit) {
    accepting = false;
    drainDeadline = saturatedAdd(ticker.read(), unit.toNanos(grace));
    stopRequested = true;
    LockSupport.unpark(thread);
    try {
      thread.join();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  @Override
  public void close() {
    shutdown(30, TimeUnit.SECONDS);
  }

  // ------------------------------------------------------------------ loop

  private void loop() {
    try {
      while (true) {
        try {
          drainInbox();
          if (failCause != null) {
            break;
          }
          long now = ticker.read();
          if (stopRequested && (now - drainDeadline >= 0 || idle())) {
            break;
          }
          retireExpired(now);
          boolean wasIdle = runningCount == 0;
          admit();
          if (runningCount == 0) {
            LockSupport.parkNanos(this, IDLE_PARK_NANOS);
            continue;
          }
          if (wasIdle && config.batchWindowNanos() > 0 && runningCount < running.length) {
            LockSupport.parkNanos(this, config.batchWindowNanos());
            drainInbox();
            admit();
          }
          runStep();
        } catch (RuntimeException | Error e) {
          // A bug in the loop itself, not in the model: fail what is running (with the time it
          // has) and keep serving.
          log.error("scheduler loop for {} failed; failing running sequences", modelName, e);
          for (int i = runningCount - 1; i >= 0; i--) {
            finish(running[i], FinishReason.ERROR, e);
          }
          if (e instanceof VirtualMachineError && !(e instanceof OutOfMemoryError)) {
            throw e;
          }
        }
      }
    } finally {
      // Whatever is left ends now, each with its record; a submission from now on takes its
      // request back (submit), so none is left in the inbox unseen.
      terminated = true;
      drainInbox();
      Throwable failed = failCause;
      for (int i = runningCount - 1; i >= 0; i--) {
        finish(running[i], failed != null ? FinishReason.ERROR : FinishReason.CANCELLED, failed);
      }
      if (held != null) {
        cancelWaiting(held);
        held = null;
      }
      waiting.drain(cancelWaiting);
      runningFigure = 0;
      cache.close();
    }
  }

  private boolean idle() {
    return runningCount == 0 && held == null && waiting.isEmpty() && inbox.isEmpty();
  }

  private void drainInbox() {
    Seq s;
    while ((s = inbox.poll()) != null) {
      waiting.add(s.request.apiKeyId(), s);
    }
  }

  /** Cancelled or timed-out sequences leave now, waiting or running, with the time they used. */
  private void retireExpired(long now) {
    for (int i = runningCount - 1; i >= 0; i--) {
      Seq s = running[i];
      if (s.cancelled || (s.parent != null && s.parent.cancelled)) {
        finish(s, FinishReason.CANCELLED, null);
      } else if (now - s.deadline >= 0) {
        finish(s, FinishReason.TIMEOUT, null);
      }
    }
    // Budgets: a request whose guard refuses the next step stops here, before it (the steps it
    // ran are charged; at most one step past its funds: the one that was already running).
    for (int i = runningCount - 1; i >= 0; i--) {
      Seq s = running[i];
      Seq g = s.parent != null ? s.parent : s;
      if (g.guard != StepGuard.NONE && !s.done && !guardAllows(g)) {
        finishGroup(g, FinishReason.INSUFFICIENT_QUOTA);
      }
    }
    retireNow = now;
    if (held != null && expiredWhileWaiting(held)) {
      Seq h = held;
      held = null;
      retireWaiting(h);
    }
    if (waiting.isEmpty()) {
      return;
    }
    waiting.removeIf(expiredWhileWaiting, retireWaiting);
  }

  /** Asks the request's guard with the whole request's time so far and its last step's share. */
  private static boolean guardAllows(Seq g) {
    long used = 0;
    long last = 0;
    for (Seq m : g.members) {
      used += m.prefillNs + m.decodeNs;
      if (m == g || !m.done) {
        last += m.lastShare;
      }
    }
    return g.guard.mayStep(used, last);
  }

  /** Ends every choice of the request {@code g} (choice 0 last) with {@code reason}. */
  private void finishGroup(Seq g, FinishReason reason) {
    finishGroup(g, reason, null);
  }

  private void finishGroup(Seq g, FinishReason reason, Throwable error) {
    for (int i = g.members.length - 1; i >= 0; i--) {
      finish(g.members[i], reason, error); // a choice that ended already is left as it is
    }
  }

  private boolean expiredWhileWaiting(Seq s) {
    return s.cancelled || retireNow - s.deadline >= 0;
  }

  private void retireWaiting(Seq s) {
    leaveQueue(s);
    finishGroup(s, s.cancelled ? FinishReason.CANCELLED : FinishReason.TIMEOUT);
  }

  /** At the end of the loop: cancelled, or failed with the scheduler ({@link #fail}). */
  private void cancelWaiting(Seq s) {
    leaveQueue(s);
    Throwable failed = failCause;
    finishGroup(s, failed != null ? FinishReason.ERROR : FinishReason.CANCELLED, failed);
  }

  /**
   * Gives free slots to waiting requests, a prompt's {@code n} choices at a time: a request's
   * prompts are admitted in order as their choices fit, and a request with prompts still waiting is
   * {@link #held} at the head of the line (it is still queued) until its last prompt is in.
   */
  private void admit() {
    while (freeSlotCount > 0) {
      Seq s = held != null ? held : waiting.poll();
      if (s == null) {
        break;
      }
      int n = s.request.n();
      while (s.admitted < s.members.length) {
        Seq leader = s.members[s.admitted];
        if (leader.done) {
          // ended before it ran (its request was stopped): its choices are done too
          s.admitted += n;
          continue;
        }
        if (n > freeSlotCount) {
          break; // a prompt's n choices need their slots at once
        }
        for (int i = s.admitted; i < s.admitted + n; i++) {
          Seq m = s.members[i];
          m.slot = freeSlots[--freeSlotCount];
          if (m.leader) {
            running[runningCount++] = m; // prefills its prompt
          } // else reserved; running once its prompt is copied
        }
        s.admitted += n;
      }
      if (s.admitted < s.members.length) {
        held = s; // wait at the head of the line for the slots its next prompt needs
        break;
      }
      held = null;
      leaveQueue(s);
    }
    runningFigure = runningCount;
  }

  private void runStep() {
    batch.clear();
    int n = 0;
    int budget = config.maxTokensPerStep();
    WeightPolicy policy = config.weightPolicy();
    // Decode first: one token per running sequence past its prompt.
    for (int i = 0; i < runningCount; i++) {
      Seq s = running[i];
      if (s.cached >= s.promptLen) {
        int row = batch.addSequence(s.slot, s.tokens, s.cached, 1, s.cached);
        stepSeqs[row] = s;
        stepPrefill[row] = false;
        stepLen[row] = 1;
        weights[row] = policy.weight(false, 1, s.cached + 1);
        budget--;
        n++;
      }
    }
    // Then prompt chunks, in admission order, while the budget lasts.
    for (int i = 0; i < runningCount && budget > 0; i++) {
      Seq s = running[i];
      if (s.cached < s.promptLen) {
        // A prompt whose logprobs are asked for goes one token per step: a step returns the
        // logits of a sequence's last position only (LanguageModel#step).
        int chunk = s.promptLogprobs != null ? 1 : config.prefillChunk();
        int len = Math.min(Math.min(s.promptLen - s.cached, chunk), budget);
        int row = batch.addSequence(s.slot, s.tokens, s.cached, len, s.cached);
        stepSeqs[row] = s;
        stepPrefill[row] = true;
        stepLen[row] = len;
        weights[row] = policy.weight(true, len, s.cached + len);
        budget -= len;
        n++;
      }
    }
    if (n == 0) {
      return;
    }
    int tokens = batch.tokenCount();
    long startNanos = ticker.read();
    Throwable failure = null;
    long measured;
    StepTimer.Span span = timer.begin();
    try {
      RuntimeException fault = injectedFault;
      if (fault != null) {
        injectedFault = null;
        throw fault;
      }
      model.step(batch, cache, logits);
    } catch (RuntimeException | Error e) {
      failure = e;
    } finally {
      measured = span.end();
    }
    Apportioner.split(measured, weights, n, shares, scratch);
    StepReport step = report.fillCharged(measured, shares, n, tokens, failure != null);
    for (int row = 0; row < n; row++) {
      Seq s = stepSeqs[row];
      if (s.firstStepNanos < 0) {
        s.firstStepNanos = startNanos;
      }
      s.steps++;
      s.batchCompany += n - 1; // the other sequences in this step
      s.lastShare = step.share(row);
      if (stepPrefill[row]) {
        s.prefillNs += step.share(row);
      } else {
        s.decodeNs += step.share(row);
      }
      s.cached += stepLen[row];
      s.kv.add(s.cached * kvBytesPerToken, measured); // memory-time: see KvMeter
    }
    counters.record(step);
    stepsFigure++;
    lastStepNs = measured;
    lastBatchSize = n;
    lastStepTokens = tokens;
    stepListener.onStep(step);

    if (failure != null) {
      log.error(
          "model step failed for {} on {} ({} sequences, {} tokens)",
          modelName,
          timer.info().device(),
          n,
          tokens,
          failure);
      // taken out of service by a listener (the replica router) for this failure: say so
      Throwable why = failCause != null ? failCause : failure;
      if (why != failure && why.getCause() == null) {
        why.initCause(failure);
      }
      for (int row = 0; row < n; row++) {
        finish(stepSeqs[row], FinishReason.ERROR, why);
      }
      clearStepRefs(n);
      return;
    }
    for (int row = 0; row < n; row++) {
      Seq s = stepSeqs[row];
      if (s.cached < s.length) {
        if (s.promptLogprobs != null) {
          // the logits after the prompt's first cached tokens, for its next prompt token
          s.promptLogprobs.add(
              logSoftmax.of(logits[row], s.tokens[s.cached], s.request.topLogprobs()));
        }
        continue; // a prompt chunk that did not reach the end of the prompt
      }
      if (stepPrefill[row] && s.promptLogprobs != null) {
        // the prompt's last chunk: its logprobs go out before its choices' first tokens
        s.request
            .listener()
            .onPromptLogprobs(s.index / s.request.n(), List.copyOf(s.promptLogprobs));
      }
      if (s.children != null && !s.forked && !fork(s, logits[row])) {
        continue;
      }
      float[] raw = logits[row];
      if (s.logprobs != null) {
        System.arraycopy(raw, 0, logprobScratch, 0, vocabSize); // the sampler overwrites raw
      }
      int token =
          sampler.sample(
              raw,
              s.request.temperature(),
              s.request.sampling(),
              s.counts,
              s.seen,
              s.seenCount,
              s.rng);
      emit(s, token, logprob(s, logprobScratch, token));
    }
    for (int row = 0; row < n; row++) {
      stepSeqs[row].request.listener().onStepEnd(); // the step's tokens are all out
    }
    clearStepRefs(n);
  }

  /** The token's logprob when its request asked for them, else null; {@code raw} is unsampled. */
  private TokenLogprob logprob(Seq s, float[] raw, int token) {
    if (s.logprobs == null || eos[token]) {
      return null;
    }
    return logSoftmax.of(raw, token, s.request.topLogprobs());
  }

  private void emit(Seq s, int token, TokenLogprob logprob) {
    if (eos[token]) {
      finish(s, FinishReason.STOP, null);
      return;
    }
    s.tokens[s.length++] = token;
    s.generated++;
    if (s.counts != null && s.counts[token]++ == 0) {
      s.seen[s.seenCount++] = token;
    }
    if (s.logprobs != null) {
      s.logprobs.add(logprob);
    }
    s.request.listener().onChoiceToken(s.index, token, logprob);
    if (s.stop.stopsAfter(token)) {
      finish(s, FinishReason.STOP, null); // a stop string: no step runs past it
    } else if (s.generated >= s.request.maxTokens() || s.length >= contextLength) {
      finish(s, FinishReason.LENGTH, null);
    }
  }

  /**
   * The prompt of a request with {@code n > 1} choices is prefilled (in {@code parent}'s slot):
   * copy its keys and values into the other choices' reserved slots, as a timed step of its own
   * charged to the request (one report with one row, prefill time), then start each other choice
   * with its first token drawn from the prompt's last logits ({@code row}, left as it is for the
   * parent).
   *
   * @return false if the copy failed (the request has then failed, with its time)
   */
  private boolean fork(Seq parent, float[] row) {
    parent.forked = true;
    Throwable failure = null;
    long measured;
    StepTimer.Span span = timer.begin();
    try {
      for (Seq c : parent.children) {
        model.copyPrefix(cache, parent.slot, c.slot, parent.promptLen);
      }
    } catch (RuntimeException | Error e) {
      failure = e;
    } finally {
      measured = span.end();
    }
    forkShare[0] = measured;
    StepReport copy = report.fillCharged(measured, forkShare, 1, 0, failure != null);
    parent.prefillNs += copy.share(0);
    parent.steps++;
    counters.record(copy);
    stepsFigure++;
    stepListener.onStep(copy);
    if (failure != null) {
      log.error(
          "KV prefix copy failed for {} ({} choices)", modelName, parent.request.n(), failure);
      parent.forked = false; // finish() gives up the reserved slots
      finish(parent, FinishReason.ERROR, failure);
      return false;
    }
    for (Seq c : parent.children) {
      c.cached = parent.promptLen;
      c.firstStepNanos = parent.firstStepNanos;
      running[runningCount++] = c;
    }
    runningFigure = runningCount;
    for (Seq c : parent.children) {
      System.arraycopy(row, 0, forkScratch, 0, vocabSize);
      int token =
          sampler.sample(
              forkScratch,
              c.request.temperature(),
              c.request.sampling(),
              c.counts,
              c.seen,
              c.seenCount,
              c.rng);
      emit(c, token, logprob(c, row, token)); // row is still raw: the parent samples after
    }
    return true;
  }

  private void clearStepRefs(int n) {
    Arrays.fill(stepSeqs, 0, n, null);
  }

  /**
   * Removes a sequence from wherever it is; when it is the last of its request's choices to end,
   * publishes the request's one record.
   */
  private void finish(Seq s, FinishReason reason, Throwable error) {
    if (s.done) {
      return;
    }
    s.done = true;
    s.reason = reason;
    if (s.slot >= 0) {
      int idx = -1;
      for (int i = 0; i < runningCount; i++) {
        if (running[i] == s) {
          idx = i;
          break;
        }
      }
      if (idx >= 0) {
        System.arraycopy(running, idx + 1, running, idx, runningCount - idx - 1);
        running[--runningCount] = null;
        runningFigure = runningCount;
      }
      freeSlots[freeSlotCount++] = s.slot;
      s.slot = -1;
    }
    Seq g = s.parent != null ? s.parent : s;
    if (error != null && g.error == null) {
      g.error = error;
    }
    g.membersLeft--;
    if (s.children != null && !s.forked) {
      // ended before its prompt was copied: the prompt's other choices never ran
      s.forked = true;
      for (Seq c : s.children) {
        if (c.done) {
          continue; // ended first by finishGroup: counted already
        }
        c.done = true;
        c.reason = reason;
        if (c.slot >= 0) {
          freeSlots[freeSlotCount++] = c.slot;
          c.slot = -1;
        }
        g.membersLeft--;
      }
    }
    if (g.membersLeft == 0) {
      publish(g);
    }
  }

  /** The request's one record: every choice's shares, prefill and copy included, summed. */
  private void publish(Seq s) {
    long prefillNs = 0;
    long decodeNs = 0;
    int steps = 0;
    long batchCompany = 0;
    int generated = 0;
    int promptTokens = 0;
    long kvByteNs = 0;
    long peakKvBytes = 0;
    boolean kvSaturated = false;
    FinishReason reason = s.reason;
    List<Choice> choices = new ArrayList<>(s.members.length);
    int n = s.request.n();
    for (Seq c : s.members) {
      prefillNs += c.prefillNs;
      decodeNs += c.decodeNs;
      steps += c.steps;
      batchCompany += c.batchCompany;
      generated += c.generated;
      if (severity(c.reason) > severity(reason)) {
        reason = c.reason;
      }
      if (c.leader) {
        // each prompt, as choice 0 of a request of one prompt counts it
        promptTokens += c.promptLen;
        kvByteNs = saturatedAdd(kvByteNs, c.kv.byteNs());
        peakKvBytes = saturatedAdd(peakKvBytes, c.kv.peakBytes());
        kvSaturated |= c.kv.saturated();
      }
      Seq leader = s.members[c.index - c.index % n];
      choices.add(
          new Choice(
              c.index,
              c.generatedTokens(),
              c.reason,
              c.logprobList(),
              leader.promptLogprobs == null ? null : List.copyOf(leader.promptLogprobs)));
    }
    long end = ticker.read();
    long queueNs = Math.max(0, (s.firstStepNanos >= 0 ? s.firstStepNanos : end) - s.submitNanos);
    UsageStatus status =
        switch (reason) {
          case STOP, LENGTH, INSUFFICIENT_QUOTA -> UsageStatus.OK;
          case CANCELLED -> UsageStatus.CANCELLED;
          case TIMEOUT -> UsageStatus.TIMEOUT;
          case ERROR -> UsageStatus.FAILED;
        };
    if (kvSaturated) {
      log.warn(
          "KV memory-time of {} passed {} byte-ns; recorded as that bound",
          s.request.requestId(),
          Long.MAX_VALUE);
    }
    UsageRecord record =
        new UsageRecord(
            s.request.requestId(),
            s.request.apiKeyId(),
            s.request.accountId(),
            modelName,
            timer.info(),
            policyName,
            prefillNs + decodeNs,
            prefillNs,
            decodeNs,
            promptTokens,
            generated,
            queueNs,
            steps,
            status,
            s.startedAt,
            clock.instant(),
            s.request.sessionId(),
            kvByteNs,
            peakKvBytes,
            batchCompany);
    CompletableFuture<Void> durable;
    try {
      durable = sink.publish(record);
    } catch (RuntimeException e) {
      durable = CompletableFuture.failedFuture(e);
    }
    completed.incrementAndGet();
    s.future.complete(
        new GenerationResult(
            choices.get(0).tokens(), reason, record, durable, s.error, List.copyOf(choices)));
  }

  /** Which reason a request with several choices reports: the worst of them. */
  private static int severity(FinishReason r) {
    return switch (r) {
      case STOP, LENGTH, INSUFFICIENT_QUOTA -> 0;
      case CANCELLED -> 1;
      case TIMEOUT -> 2;
      case ERROR -> 3;
    };
  }

  private static long saturatedAdd(long a, long b) {
    long r = a + b;
    return ((a ^ r) & (b ^ r)) < 0 ? Long.MAX_VALUE : r;
  }

  private void wake() {
    LockSupport.unpark(thread);
  }

  /** One request's life in the scheduler. Fields other than {@code cancelled} are loop-only. */
  private static final class Seq implements Generation {
    final ContinuousScheduler owner;
    final GenerationRequest request;
    final CompletableFuture<GenerationResult> future = new CompletableFuture<>();
    final int[] tokens;
    final int promptLen;
    final long submitNanos;
    final long deadline;
    final java.time.Instant startedAt;
    final SplittableRandom rng;

    /** The request's choice 0 for another choice, else null. */
    final Seq parent;

    /** This choice's index in its request: prompt × n + choice of the prompt. */
    final int index;

    /** Whether this is choice 0 of its prompt: it prefills the prompt (and forks the others). */
    final boolean leader;

    /** The prompt's choices 1 to n - 1 (on a leader, when n > 1), else null. */
    Seq[] children;

    /** Every choice of the request in index order, this one first (on choice 0), else null. */
    Seq[] members;

    /** This choice's own stop condition. */
    final StopCondition stop;

    /** The logprobs of the prompt's tokens after the first (on a leader that computes them). */
    final ArrayList<TokenLogprob> promptLogprobs;

    /** Whether the prompt was copied to the children (or they were given up). */
    boolean forked;

    /** Choices of the request not ended yet (on choice 0). */
    int membersLeft;

    /** Choices given slots (or passed over, having ended), a prompt's n at a time (on choice 0). */
    int admitted;

    FinishReason reason;
    Throwable error;

    /** Times each token was generated (penalties only, else null). */
    final int[] counts;

    /** The distinct generated tokens, {@code seenCount} of them (penalties only, else null). */
    final int[] seen;

    int seenCount;

    /** One per generated token (when the request asked for logprobs, else null). */
    final ArrayList<TokenLogprob> logprobs;

    volatile boolean cancelled;
    boolean done;
    int length;
    int cached;
    int generated;
    int slot = -1;
    long firstStepNanos = -1;
    long prefillNs;
    long decodeNs;
    int steps;

    /** Sum over its steps of the other sequences in each (the record's batch company). */
    long batchCompany;

    /** This choice's share of its last step (the guard's estimate of the next). */
    long lastShare;

    /** Consulted before each step (on choice 0; set once before the sequence is queued). */
    StepGuard guard = StepGuard.NONE;

    final KvMeter kv = new KvMeter();

    Seq(
        ContinuousScheduler owner,
        GenerationRequest request,
        long submitNanos,
        long deadline,
        java.time.Instant startedAt) {
      this(owner, request, submitNanos, deadline, startedAt, null, 0);
    }

    /**
     * Choice {@code index} of {@code request}; choice 0 makes the others: for each prompt its
     * leader (choice 0 of that prompt) and the leader's children.
     */
    Seq(
        ContinuousScheduler owner,
        GenerationRequest request,
        long submitNanos,
        long deadline,
        java.time.Instant startedAt,
        Seq parent,
        int index) {
      this.owner = owner;
      this.request = request;
      this.parent = parent;
      this.index = index;
      int n = request.n();
      this.leader = index % n == 0;
      int[] prompt = request.prompt(index / n);
      this.promptLen = prompt.length;
      this.tokens = Arrays.copyOf(prompt, promptLen + request.maxTokens());
      this.stop = request.stop().forChoice(index);
      this.promptLogprobs =
          leader && request.promptLogprobs() ? new ArrayList<>(promptLen - 1) : null;
      this.length = promptLen;
      this.submitNanos = submitNanos;
      this.deadline = deadline;
      this.startedAt = startedAt;
      this.rng = new SplittableRandom(request.seed() + CHOICE_SEED_STRIDE * index);
      if (request.sampling().penalized()) {
        int vocab = owner.vocabSize;
        this.counts = new int[vocab];
        this.seen = new int[Math.min(vocab, request.maxTokens())];
      } else {
        this.counts = null;
        this.seen = null;
      }
      this.logprobs =
          request.topLogprobs() >= 0 ? new ArrayList<>(Math.min(request.maxTokens(), 64)) : null;
      if (parent == null) {
        this.members = new Seq[request.sequences()];
        this.membersLeft = members.length;
        members[0] = this;
        for (int i = 1; i < members.length; i++) {
          members[i] = new Seq(owner, request, submitNanos, deadline, startedAt, this, i);
        }
        if (n > 1) {
          for (int l = 0; l < members.length; l += n) {
            members[l].children = Arrays.copyOfRange(members, l + 1, l + n);
          }
        }
      }
    }

    List<TokenLogprob> logprobList() {
      return logprobs == null ? null : List.copyOf(logprobs);
    }

    /** The tokens this request stands for while it waits: each prompt + max_tokens × n. */
    long waitingTokens() {
      long t = 0;
      for (Seq m : members) {
        t += (m.leader ? m.promptLen : 0) + (long) request.maxTokens();
      }
      return t;
    }

    int[] generatedTokens() {
      return Arrays.copyOfRange(tokens, promptLen, promptLen + generated);
    }

    @Override
    public String requestId() {
      return request.requestId();
    }

    @Override
    public CompletableFuture<GenerationResult> result() {
      return future;
    }

    @Override
    public void cancel() {
      if (!cancelled) {
        cancelled = true;
        owner.wake();
      }
    }
  }
}
