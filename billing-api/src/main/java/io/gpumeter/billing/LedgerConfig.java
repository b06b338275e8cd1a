package io.gpumeter.billing;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Objects;

/**
 * Settings of the ledger's write path: {@link io.gpumeter.billing.ledger.LedgerWriter}'s queue and
 * batches, the {@link Durability} mode, the circuit breaker and retry in front of PostgreSQL, and
 * the local outbox behind them. Immutable; {@link #defaults()}, {@link #custom()}, {@link
 * #from(LedgerConfig)}. Every setter validates and names the bad value.
 */
public final class LedgerConfig {

  private final int queueCapacity;
  private final int maxBatchSize;
  private final int writers;
  private final Duration linger;
  private final Duration closeTimeout;
  private final Durability durability;
  private final Path outboxDirectory;
  private final long outboxMaxBytes;
  private final long outboxSegmentBytes;
  private final Duration outboxAppendTimeout;
  private final Duration replayInterval;
  private final int replayChunk;
  private final int retryAttempts;
  private final Duration retryBackoff;
  private final int breakerWindow;
  private final int breakerMinimumCalls;
  private final float breakerFailureRate;
  private final Duration breakerOpenWait;
  private final CommitPoint commitPoint;
  private final long commitLogMaxBytes;
  private final long commitLogSegmentBytes;

  private LedgerConfig(Builder b) {
    this.queueCapacity = b.queueCapacity;
    this.maxBatchSize = b.maxBatchSize;
    this.writers = b.writers;
    this.linger = b.linger;
    this.closeTimeout = b.closeTimeout;
    this.durability = b.durability;
    this.outboxDirectory = b.outboxDirectory;
    this.outboxMaxBytes = b.outboxMaxBytes;
    this.outboxSegmentBytes = b.outboxSegmentBytes;
    this.outboxAppendTimeout = b.outboxAppendTimeout;
    this.replayInterval = b.replayInterval;
    this.replayChunk = b.replayChunk;
    this.retryAttempts = b.retryAttempts;
    this.retryBackoff = b.retryBackoff;
    this.breakerWindow = b.breakerWindow;
    this.breakerMinimumCalls = b.breakerMinimumCalls;
    this.breakerFailureRate = b.breakerFailureRate;
    this.breakerOpenWait = b.breakerOpenWait;
    this.commitPoint = b.commitPoint;
    this.commitLogMaxBytes = b.commitLogMaxBytes;
    this.commitLogSegmentBytes = b.commitLogSegmentBytes;
  }

  /**
   * 65 536 queued, batches of up to 500, no linger (group commit), 30 s to drain on close; DURABLE;
   * outbox of at most 1 GiB in 8 MiB segments beside the database folder, replayed every second; 3
   * attempts (50 ms, 100 ms backoff); the breaker opens when half of the last 10 calls (at least 3)
   * failed and probes again after 2 s.
   */
  public static LedgerConfig defaults() {
    return new Builder().build();
  }

  public static Builder custom() {
    return new Builder();
  }

  public static Builder from(LedgerConfig base) {
    return new Builder(base);
  }

  /** Records that may wait for the writer; beyond it {@code publish} fails. */
  public int queueCapacity() {
    return queueCapacity;
  }

  /** Most records written in one transaction. */
  public int maxBatchSize() {
    return maxBatchSize;
  }

  /**
   * Writer threads, each with its own connection and transactions (default 1). Several let batches
   * commit in parallel: more records per second into one PostgreSQL while one commit's round trip
   * and fsync bound a single writer (docs/DESIGN.md, "Ledger writers"). Batches of different
   * writers may commit in any order; request ids, rollups and deductions stay exact (the store
   * takes its locks in one order and retries a deadlock).
   */
  public int writers() {
    return writers;
  }

  /**
   * How long the writer waits for more records once it has drained the queue; 0 (the default)
   * commits at once, and records published during a commit form the next batch (group commit).
   */
  public Duration linger() {
    return linger;
  }

  /**
   * How long {@link io.gpumeter.billing.ledger.LedgerWriter#close()} waits for the queue to drain.
   */
  public Duration closeTimeout() {
    return closeTimeout;
  }

  public Durability durability() {
    return durability;
  }

  /**
   * The outbox folder, or null for the default: {@code outbox} beside the embedded database's data
   * folder ({@code ./data/outbox} for {@code ./data/postgres}); see {@link
   * Billing#outboxDirectory}.
   */
  public Path outboxDirectory() {
    return outboxDirectory;
  }

  /** Size limit of the outbox; beyond it new charges are refused while the database is down. */
  public long outboxMaxBytes() {
    return outboxMaxBytes;
  }

  public long outboxSegmentBytes() {
    return outboxSegmentBytes;
  }

  /** Longest wait for the outbox's fsync before a batch counts as not durable. */
  public Duration outboxAppendTimeout() {
    return outboxAppendTimeout;
  }

  /** How often the replayer looks at the outbox (and probes an open breaker). */
  public Duration replayInterval() {
    return replayInterval;
  }

  /** Records per replay transaction. */
  public int replayChunk() {
    return replayChunk;
  }

  /** Attempts per batch for transient errors (1 = no retry). */
  public int retryAttempts() {
    return retryAttempts;
  }

  /** Wait before the second attempt; doubles for each further one. */
  public Duration retryBackoff() {
    return retryBackoff;
  }

  /** Calls in the breaker's count-based sliding window. */
  public int breakerWindow() {
    return breakerWindow;
  }

  /** Calls needed in the window before the breaker may open. */
  public int breakerMinimumCalls() {
    return breakerMinimumCalls;
  }

  /** Failure rate (percent of the window) at which the breaker opens. */
  public float breakerFailureRate() {
    return breakerFailureRate;
  }

  /** How long the breaker stays open before the replayer probes the database. */
  public Duration breakerOpenWait() {
    return breakerOpenWait;
  }

  /** Where a durable charge is durable when answered (default {@link CommitPoint#POSTGRES}). */
  public CommitPoint commitPoint() {
    return commitPoint;
  }

  /**
   * With {@link CommitPoint#LOCAL}: the most the commit log may hold on disk (its segments at their
   * preallocated size, the one prepared ahead included); at it new charges are refused until
   * shipping to PostgreSQL frees segments. Default 1 GiB.
   */
  public long commitLogMaxBytes() {
    return commitLogMaxBytes;
  }

  /** The preallocated size of a commit-log segment (default 8 MiB). */
  public long commitLogSegmentBytes() {
    return commitLogSegmentBytes;
  }

  public LedgerConfig withQueueCapacity(int capacity) {
    return from(this).queueCapacity(capacity).build();
  }

  public LedgerConfig withMaxBatchSize(int size) {
    return from(this).maxBatchSize(size).build();
  }

  public LedgerConfig withLinger(Duration d) {
    return from(this).linger(d).build();
  }

  public LedgerConfig withCloseTimeout(Duration d) {
    return from(this).closeTimeout(d).build();
  }

  public LedgerConfig withDurability(Durability d) {
    return from(this).durability(d).build();
  }

  public LedgerConfig withOutboxDirectory(Path dir) {
    return from(this).outboxDirectory(dir).build();
  }

  @Override
  public String toString() {
    return "LedgerConfig{durability="
        + durability
        + ", queueCapacity="
        + queueCapacity
        + ", maxBatchSize="
        + maxBatchSize
        + ", writers="
        + writers
        + ", linger="
        + linger
        + ", outboxDirectory="
        + outboxDirectory
        + ", outboxMaxBytes="
        + outboxMaxBytes
        + ", replayInterval="
        + replayInterval
        + ", retryAttempts="
        + retryAttempts
        + ", breakerOpenWait="
        + breakerOpenWait
        + ", commitPoint="
        + commitPoint
        + ", commitLogMaxBytes="
        + commitLogMaxBytes
        + "}";
  }

  /** Validates each value as it is set, naming the bad value. */
  public static final class Builder {
    private int queueCapacity = 65_536;
    private int maxBatchSize = 500;
    private int writers = 1;
    private Duration linger = Duration.ZERO;
    private Duration closeTimeout = Duration.ofSeconds(30);
    private Durability durability = Durability.DURABLE;
    private Path outboxDirectory;
    private long outboxMaxBytes = 1L << 30;
    private long outboxSegmentBytes = 8L << 20;
    private Duration outboxAppendTimeout = Duration.ofSeconds(30);
    private Duration replayInterval = Duration.ofSeconds(1);
    private int replayChunk = 500;
    private int retryAttempts = 3;
    private Duration retryBackoff = Duration.ofMillis(50);
    private int breakerWindow = 10;
    private int breakerMinimumCalls = 3;
    private float breakerFailureRate = 50f;
    private Duration breakerOpenWait = Duration.ofSeconds(2);
    private CommitPoint commitPoint = CommitPoint.POSTGRES;
    private long commitLogMaxBytes = 1L << 30;
    private long commitLogSegmentBytes = 8L << 20;

    private Builder() {}

    private Builder(LedgerConfig c) {
      queueCapacity = c.queueCapacity;
      maxBatchSize = c.maxBatchSize;
      writers = c.writers;
      linger = c.linger;
      closeTimeout = c.closeTimeout;
      durability = c.durability;
      outboxDirectory = c.outboxDirectory;
      outboxMaxBytes = c.outboxMaxBytes;
      outboxSegmentBytes = c.outboxSegmentBytes;
      outboxAppendTimeout = c.outboxAppendTimeout;
      replayInterval = c.replayInterval;
      replayChunk = c.replayChunk;
      retryAttempts = c.retryAttempts;
      retryBackoff = c.retryBackoff;
      breakerWindow = c.breakerWindow;
      breakerMinimumCalls = c.breakerMinimumCalls;
      breakerFailureRate = c.breakerFailureRate;
      breakerOpenWait = c.breakerOpenWait;
      commitPoint = c.commitPoint;
      commitLogMaxBytes = c.commitLogMaxBytes;
      commitLogSegmentBytes = c.commitLogSegmentBytes;
    }

    public Builder queueCapacity(int v) {
      require(v >= 1, "queueCapacity must be >= 1, was %s", v);
      queueCapacity = v;
      return this;
    }

    /**
     * At most 10 000: the batch travels as one array per column (or one COPY), so the size is not
     * limited by the protocol's 65 535 parameters; this bound keeps one transaction short.
     */
    public Builder maxBatchSize(int v) {
      require(v >= 1 && v <= 10_000, "maxBatchSize must be in [1, 10000], was %s", v);
      maxBatchSize = v;
      return this;
    }

    /** 1 to 16 writer threads (each holds a pool connection while it commits). */
    public Builder writers(int v) {
      require(v >= 1 && v <= 16, "writers must be in [1, 16], was %s", v);
      writers = v;
      return this;
    }

    public Builder linger(Duration v) {
      require(v != null && !v.isNegative(), "linger must be >= 0, was %s", v);
      linger = v;
      return this;
    }

    public Builder closeTimeout(Duration v) {
      require(v != null && !v.isNegative(), "closeTimeout must be >= 0, was %s", v);
      closeTimeout = v;
      return this;
    }

    public Builder durability(Durability v) {
      durability = Objects.requireNonNull(v, "durability");
      return this;
    }

    /** Null restores the default (beside the database folder). */
    public Builder outboxDirectory(Path v) {
      outboxDirectory = v == null ? null : v.toAbsolutePath().normalize();
      return this;
    }

    public Builder outboxMaxBytes(long v) {
      require(v >= 4096, "outboxMaxBytes must be >= 4096, was %s", v);
      outboxMaxBytes = v;
      return this;
    }

    public Builder outboxSegmentBytes(long v) {
      require(v >= 4096, "outboxSegmentBytes must be >= 4096, was %s", v);
      outboxSegmentBytes = v;
      return this;
    }

    public Builder outboxAppendTimeout(Duration v) {
      require(v != null && v.toMillis() > 0, "outboxAppendTimeout must be > 0, was %s", v);
      outboxAppendTimeout = v;
      return this;
    }

    public Builder replayInterval(Duration v) {
      require(v != null && v.toMillis() >= 10, "replayInterval must be >= 10ms, was %s", v);
      replayInterval = v;
      return this;
    }

    public Builder replayChunk(int v) {
      require(v >= 1 && v <= 10_000, "replayChunk must be in [1, 10000], was %s", v);
      replayChunk = v;
      return this;
    }

    public Builder retryAttempts(int v) {
      require(v >= 1 && v <= 10, "retryAttempts must be in [1, 10], was %s", v);
      retryAttempts = v;
      return this;
    }

    public Builder retryBackoff(Duration v) {
      require(v != null && v.toMillis() >= 1, "retryBackoff must be >= 1ms, was %s", v);
      retryBackoff = v;
      return this;
    }

    /** Count-based window of {@code window} calls; opens once {@code minimumCalls} were seen. */
    public Builder breakerWindow(int window, int minimumCalls) {
      require(window >= 1, "breaker window must be >= 1, was %s", window);
      require(
          minimumCalls >= 1 && minimumCalls <= window,
          "breaker minimumCalls must be in [1, window=" + window + "], was %s",
          minimumCalls);
      breakerWindow = window;
      breakerMinimumCalls = minimumCalls;
      return this;
    }

    public Builder breakerFailureRate(float percent) {
      require(
          percent > 0 && percent <= 100, "breakerFailureRate must be in (0, 100], was %s", percent);
      breakerFailureRate = percent;
      return this;
    }

    public Builder breakerOpenWait(Duration v) {
      require(v != null && v.toMillis() >= 1, "breakerOpenWait must be >= 1ms, was %s", v);
      breakerOpenWait = v;
      return this;
    }

    public Builder commitPoint(CommitPoint v) {
      require(v != null, "commitPoint must not be null, was %s", v);
      commitPoint = v;
      return this;
    }

    public Builder commitLogMaxBytes(long v) {
      require(v >= 8192, "commitLogMaxBytes must be >= 8192, was %s", v);
      commitLogMaxBytes = v;
      return this;
    }

    public Builder commitLogSegmentBytes(long v) {
      require(v >= 4096, "commitLogSegmentBytes must be >= 4096, was %s", v);
      commitLogSegmentBytes = v;
      return this;
    }

    public LedgerConfig build() {
      require(
          commitLogMaxBytes >= 2 * commitLogSegmentBytes,
          "commitLogMaxBytes must hold two segments (the one in use and the next), was %s",
          commitLogMaxBytes);
      return new LedgerConfig(this);
    }

    private static void require(boolean ok, String message, Object value) {
      if (!ok) {
        throw new IllegalArgumentException(String.format(message, value));
      }
    }
  }
}
