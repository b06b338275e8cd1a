package io.gpumeter.server;

import io.gpumeter.batching.ContinuousScheduler;
import io.gpumeter.batching.ReplicaRouter;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.Billing;
import io.gpumeter.billing.Budgets;
import io.gpumeter.billing.Durability;
import io.gpumeter.billing.MeasuredTimeRecorder;
import io.gpumeter.metering.StepReport;
import io.gpumeter.metering.StepTimerFactory;
import io.gpumeter.metering.Ticker;
import io.gpumeter.model.ModelStore;
import io.gpumeter.model.ServedModel;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.channel.Channel;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.ChannelPipeline;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.handler.codec.http.HttpObjectAggregator;
import io.netty.handler.codec.http.HttpServerCodec;
import io.netty.handler.timeout.IdleStateHandler;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Clock;
import java.time.Instant;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The whole server in one object: billing database, models, one scheduler per model, and the HTTP
 * listener.
 *
 * <p><b>Start</b> ({@link #start}): the billing database starts (and migrates) on its own thread
 * while the models load and warm up on the calling thread; load and warm-up time is recorded as
 * system time, never charged (DESIGN.md invariant 6): the model store records each system step
 * report in the model's counters, and the server hands the same reports once to the ledger's
 * reconciliation totals through a {@link ReconciliationListener}. Then a scheduler per model starts
 * with the ledger as its usage sink and that listener on its step reports, and the listener binds.
 * Readiness ({@code /readyz}) flips only after all of that. If any part fails, what already started
 * is closed and the failure is thrown. Billing runs with {@link ServerConfig#billingConfig()}:
 * durability mode, outbox, retention (partition maintenance at start, then hourly).
 *
 * <p><b>Close</b>: readiness drops, the listener stops accepting, each scheduler stops admitting
 * and lets running generations finish for up to {@link ServerConfig#shutdownGrace()} (what is left
 * is cancelled and still charged), the ledger drains (so waiting responses see their charges
 * durable and are written), the database stops (nothing else stops it: the embedded PostgreSQL has
 * no shutdown hook of its own), and the event loops shut down last.
 */
public final class GpumeterServer implements AutoCloseable {
  private static final Logger log = LoggerFactory.getLogger(GpumeterServer.class);

  private final ServerConfig config;
  private final Readiness readiness = new Readiness();
  private final ServerMetrics metrics =
      new ServerMetrics(new PrometheusRegistry(), Ticker.system());
  private final AtomicBoolean closed = new AtomicBoolean();
  private final ThreadPoolExecutor blocking;
  private Billing billing;
  private ModelStore store;

  /** Served models by name; admin load/unload change it while requests read it. */
  private final Map<String, ModelEndpoint> models = new ConcurrentSkipListMap<>();

  private final List<ContinuousScheduler> schedulers = new CopyOnWriteArrayList<>();

  /** Serialises admin loads and unloads with each other and with close. */
  private final Object modelLock = new Object();

  private StepListener stepListener = StepListener.NONE;
  private EventLoopGroup acceptGroup;
  private EventLoopGroup ioGroup;
  private Channel serverChannel;
  private ConnectionLimiter connections;
  private int port = -1;

  private GpumeterServer(ServerConfig config) {
    this.config = Objects.requireNonNull(config, "config");
    int n = config.blockingThreads();
    this.blocking =
        new ThreadPoolExecutor(
            n,
            n,
            60,
            TimeUnit.SECONDS,
            new ArrayBlockingQueue<>(4096),
            daemonThreads("gpumeter-blocking-"),
            new ThreadPoolExecutor.AbortPolicy());
  }

  /**
   * Starts everything and returns once the server is ready.
   *
   * @param stepListener sees every step report of every model (audits, tests), after the
   *     reconciliation recorder: first each model's system reports (load, warm-up) once, then every
   *     charged step; {@link StepListener#NONE} otherwise
   * @throws RuntimeException whatever failed (database, models, bind); nothing is left running
   */
  public static GpumeterServer start(ServerConfig config, StepListener stepListener) {
    Objects.requireNonNull(stepListener, "stepListener");
    GpumeterServer server = new GpumeterServer(config);
    try {
      server.startAll(stepListener);
      return server;
    } catch (RuntimeException | Error e) {
      server.close();
      throw e;
    }
  }

  private void startAll(StepListener stepListener) {
    long t0 = System.nanoTime();
    log.info("Starting gpumeter: {}", config);
    CompletableFuture<Billing> db = new CompletableFuture<>();
    Thread dbThread =
        new Thread(
            () -> {
              try {
                db.complete(Billing.start(config.databaseConfig(), config.billingConfig()));
              } catch (Throwable e) {
                db.completeExceptionally(e);
              }
            },
            "gpumeter-db-start");
    dbThread.setDaemon(true);
    dbThread.start();
    try {
      StepTimerFactory timers =
          config.timer().equals("host") ? StepTimerFactory.hostOnly() : StepTimerFactory.auto();
      // a model directory that fails is reported (readyz, /v1/models) and the others are served
      // one replica per device the model is configured for (devices), each loaded and warmed
      store = ModelStore.openEach(config.modelsDir(), config::devicesFor, timers);
    } catch (RuntimeException | Error e) {
      // Wait for the database anyway, so that close() stops it.
      try {
        billing = joinBilling(db);
      } catch (RuntimeException | Error dbFailure) {
        e.addSuppressed(dbFailure);
      }
      throw e;
    }
    billing = joinBilling(db);
    if (store.models().isEmpty()) {
      throw new IllegalStateException(
          "no model could be served from "
              + config.modelsDir().toAbsolutePath()
              + " (failures: "
              + store.failures()
              + "); see model-store/README.md (tools/train_demo_model.py makes the demo model)");
    }
    if (config.durability() == Durability.FAST) {
      log.warn(
          "Ledger durability FAST: responses do not wait for their charges to be durable; a crash"
              + " or kill of this process loses the charges still queued (normally the last few"
              + " milliseconds of traffic)");
    }
    this.stepListener = stepListener;
    for (ServedModel served : store.models()) {
      startModel(store.replicas(served.name()));
    }
    bind();
    readiness.ready();
    log.info(
        "gpumeter ready on http://{}:{} in {} ms (models {}, database {})",
        config.host(),
        port,
        (System.nanoTime() - t0) / 1_000_000,
        models.keySet(),
        billing.isDatabaseEmbedded() ? "embedded" : billing.databaseUrl());
  }

  /**
   * Starts serving a loaded model: for each of its replicas (one per device), hands its system
   * reports (load, warm-up: measured on that device, never charged) once to reconciliation and the
   * caller's listener; then starts one scheduler per replica behind a {@link ReplicaRouter}, with
   * the ledger as usage sink, and adds the model's endpoint.
   */
  private ModelEndpoint startModel(List<ServedModel> replicas) {
    ServedModel first = replicas.get(0);
    String name = first.model().config().name();
    MeasuredTimeRecorder recorder = billing.measuredTime();
    Budgets.Meter budgetMeter =
        BudgetAdmission.meter(billing.budgets(), name, first.timer().info());
    List<ReplicaRouter.ReplicaSpec> specs = new java.util.ArrayList<>();
    for (ServedModel served : replicas) {
      StepListener steps =
          new ReconciliationListener(
              recorder,
              new StepMetricsListener(
                  metrics.modelMetrics(name, served.timer().info().device()), stepListener));
      // the budget's per-token estimate of this model follows its charged steps on every replica
      // (one meter per model, keyed by the first replica's device: admission reserves with it)
      steps = BudgetAdmission.estimating(budgetMeter, steps);
      // The model store already put these reports in the counters; this is their one way into
      // reconciliation (and to the caller's listener).
      for (StepReport system : served.systemReports()) {
        steps.onStep(system);
      }
      specs.add(
          new ReplicaRouter.ReplicaSpec(
              served.model(),
              served.timer(),
              served.counters(),
              // the model's calibrated weights (weights.json) when fitted on this device
              CalibrateCommand.schedulerConfigFor(served, config.schedulerConfig()),
              steps));
    }
    ReplicaRouter router =
        ReplicaRouter.start(
            specs,
            billing.ledger(),
            Ticker.system(),
            Clock.systemUTC()); // = the recorder's clock (BillingConfig default): same minutes
    for (ReplicaRouter.Replica r : router.replicas()) {
      schedulers.add(r.scheduler());
    }
    long loadNs = 0;
    long warmupNs = 0;
    for (ServedModel served : replicas) {
      loadNs += served.loadNs();
      warmupNs += served.warmupNs();
    }
    ModelEndpoint endpoint =
        new ModelEndpoint(
            name,
            first.model(),
            first.timer().info(),
            first.counters(),
            router,
            Instant.now(),
            loadNs,
            warmupNs);
    models.put(name, endpoint);
    for (ServedModel served : replicas) {
      log.info(
          "Model {} on {} ({}, timer {}): load {} ms, warm-up {} ms of device time (system,"
              + " not charged)",
          name,
          served.timer().info().device(),
          served.timer().info().deviceName(),
          served.timer().info().timerKind(),
          served.loadNs() / 1_000_000,
          served.warmupNs() / 1_000_000);
    }
    return endpoint;
  }

  /** The router in front of a served model's replicas, if it is served. */
  public java.util.Optional<ReplicaRouter> router(String model) {
    ModelEndpoint m = models.get(model);
    return m == null ? java.util.Optional.empty() : java.util.Optional.of(m.scheduler());
  }

  /** Admin: loads a model directory while serving; see {@link ModelAdmin#load}. */
  ModelEndpoint loadModel(Path dir) {
    synchronized (modelLock) {
      if (closed.get()) {
        throw new IllegalStateException("the server is shutting down");
      }
      ServedModel served = store.load(dir);
      try {
        return startModel(store.replicas(served.name()));
      } catch (RuntimeException | Error e) {
        store.removeReplicas(served.name()).forEach(ModelStore::close);
        throw e;
      }
    }
  }

  /** Admin: stops serving a model; see {@link ModelAdmin#unload}. */
  boolean unloadModel(String name) {
    synchronized (modelLock) {
      ModelEndpoint endpoint = models.remove(name); // new requests: 404 model_not_found
      if (endpoint == null) {
        return false;
      }
      ReplicaRouter router = endpoint.scheduler();
      try {
        // stops admission, lets running sequences finish (and be charged) within the grace
        router.shutdown(config.shutdownGrace().toNanos(), TimeUnit.NANOSECONDS);
      } finally {
        for (ReplicaRouter.Replica r : router.replicas()) {
          schedulers.remove(r.scheduler());
        }
        store.removeReplicas(name).forEach(ModelStore::close);
      }
      log.info("Model {} unloaded", name);
      return true;
    }
  }

  private ModelAdmin modelAdmin() {
    return new ModelAdmin() {
      @Override
      public ModelEndpoint load(Path dir) {
        return loadModel(dir);
      }

      @Override
      public boolean unload(String name) {
        return unloadModel(name);
      }

      @Override
      public Map<Path, String> failures() {
        return store.failures();
      }
    };
  }

  private static Billing joinBilling(CompletableFuture<Billing> db) {
    try {
      return db.join();
    } catch (java.util.concurrent.CompletionException e) {
      Throwable c = e.getCause();
      if (c instanceof RuntimeException r) {
        throw r;
      }
      if (c instanceof Error err) {
        throw err;
      }
      throw e;
    }
  }

  private void bind() {
    acceptGroup = new MultiThreadIoEventLoopGroup(1, NioIoHandler.newFactory());
    ioGroup = new MultiThreadIoEventLoopGroup(config.ioThreads(), NioIoHandler.newFactory());
    Routes routes =
        new Routes(
            Collections.unmodifiableMap(models),
            modelAdmin(),
            billing,
            blocking,
            config,
            metrics,
            readiness);
    int maxBody = config.maxBodyBytes();
    long idleNanos = config.idleTimeout().toNanos();
    ConnectionLimiter limiter =
        new ConnectionLimiter(config.maxConnections(), config.maxConnectionsPerAddress());
    connections = limiter;
    ServerBootstrap b =
        new ServerBootstrap()
            .group(acceptGroup, ioGroup)
            .channel(NioServerSocketChannel.class)
            .option(ChannelOption.SO_BACKLOG, 1024)
            .childOption(ChannelOption.TCP_NODELAY, true)
            // A client that shuts down its output after sending still gets its answers (ApiHandler)
            .childOption(ChannelOption.ALLOW_HALF_CLOSURE, true)
            .childOption(
                ChannelOption.SO_SNDBUF,
                config.socketSendBuffer() > 0 ? config.socketSendBuffer() : null)
            .childHandler(
                new ChannelInitializer<SocketChannel>() {
                  @Override
                  protected void initChannel(SocketChannel ch) {
                    if (!limiter.admit(ch)) {
                      return; // over a connection cap: answered with 503 and closed
                    }
                    ChannelPipeline p = ch.pipeline();
                    p.addLast("codec", new HttpServerCodec());
                    p.addLast("limit", new BodyLimitHandler(maxBody));
                    p.addLast("aggregator", new HttpObjectAggregator(maxBody));
                    p.addLast("idle", new IdleStateHandler(0, 0, idleNanos, TimeUnit.NANOSECONDS));
                    p.addLast("api", new ApiHandler(routes::dispatch, metrics.http()));
                  }
                });
    serverChannel = b.bind(config.host(), config.port()).syncUninterruptibly().channel();
    port = ((InetSocketAddress) serverChannel.localAddress()).getPort();
  }

  /** The bound HTTP port (the ephemeral one when configured with port 0). */
  public int port() {
    return port;
  }

  /** HTTP connections open now (counted against {@code http.max_connections}). */
  int openConnections() {
    return connections == null ? 0 : connections.open();
  }

  public ServerConfig config() {
    return config;
  }

  /** One scheduler per replica of each served model, in load order (replicas in device order). */
  public List<ContinuousScheduler> schedulers() {
    return Collections.unmodifiableList(schedulers);
  }

  public Billing billing() {
    return billing;
  }

  /** True once everything is up, false again from the start of {@link #close()}. */
  public boolean isReady() {
    return readiness.isReady();
  }

  /** Graceful shutdown; see the class comment. Idempotent. */
  @Override
  public void close() {
    if (!closed.compareAndSet(false, true)) {
      return;
    }
    readiness.notReady("shutting down");
    log.info("Shutting down gpumeter");
    try {
      if (serverChannel != null) {
        serverChannel.close().syncUninterruptibly();
      }
      long deadline = System.nanoTime() + config.shutdownGrace().toNanos();
      synchronized (modelLock) { // an admin load or unload in progress finishes first
        for (ContinuousScheduler s : schedulers) {
          try {
            s.shutdown(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
          } catch (RuntimeException e) {
            log.error("scheduler {} did not shut down cleanly", s.modelName(), e);
          }
        }
      }
      if (billing != null) {
        try {
          billing.close(); // drains the ledger first, then stops the database
        } catch (RuntimeException e) {
          log.error("billing did not close cleanly", e);
        }
      }
      if (store != null) {
        try {
          store.close();
        } catch (RuntimeException e) {
          log.error("model store did not close cleanly", e);
        }
      }
    } finally {
      blocking.shutdown();
      // Responses whose charges just became durable are still queued on the event loops: the
      // quiet period lets them go out before the loops stop.
      if (ioGroup != null) {
        ioGroup.shutdownGracefully(100, 5_000, TimeUnit.MILLISECONDS).syncUninterruptibly();
      }
      if (acceptGroup != null) {
        acceptGroup.shutdownGracefully(0, 1_000, TimeUnit.MILLISECONDS).syncUninterruptibly();
      }
      log.info("gpumeter stopped");
    }
  }

  static ThreadFactory daemonThreads(String prefix) {
    AtomicInteger n = new AtomicInteger();
    return r -> {
      Thread t = new Thread(r, prefix + n.incrementAndGet());
      t.setDaemon(true);
      return t;
    };
  }
}
