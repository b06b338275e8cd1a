package io.gpumeter.server;

import com.fasterxml.jackson.core.JsonGenerator;
import io.gpumeter.billing.ApiKeyPrincipal;
import io.gpumeter.billing.CostBucketRow;
import io.gpumeter.billing.KeyScope;
import io.gpumeter.billing.UsageBucketQuery;
import io.gpumeter.billing.UsageBucketRow;
import io.gpumeter.billing.usage.UsageQueries;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.util.AsciiString;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Function;

/**
 * {@code GET /v1/organization/usage/completions} and {@code GET /v1/organization/costs}: usage or
 * costs in OpenAI's page-of-buckets shape, as JSON or CSV, streamed from a database cursor
 * (server/README.md, "Usage API" and "Costs API"). Both share the query parameters ({@link
 * UsageCompletionsRequest}), the scope rule, paging and the streaming writer; a {@link Report} says
 * what is read and which columns are written.
 *
 * <p><b>Scope</b> (invariant 9): an {@code inference} key reads only its own usage (asking for
 * other keys in {@code api_key_ids} is a 403); an {@code account_admin} key reads every key of its
 * account. The account is always the caller's, so no key ever reads another account.
 *
 * <p><b>Streaming:</b> the query runs on the blocking executor; results are written as they are
 * read into {@value #CHUNK_BYTES}-byte chunks, each handed to the connection ({@link
 * ChunkedResponse}) before the next is filled. The head is sent with the first chunk, so a query
 * that fails before any result is a 503 with an OpenAI error; one that fails later closes the
 * connection (the body ends without its last chunk).
 *
 * <p><b>JSON:</b> {@code {"object":"page","data":[buckets],"has_more","next_page"}}; every bucket
 * of the page is listed, empty ones with {@code results: []}. <b>CSV:</b> a header row, then one
 * row per result of every bucket of the whole range (no pages; empty buckets have no row).
 */
final class UsageCompletionsEndpoint<R> {
  static final String PATH = "/v1/organization/usage/completions";
  static final String COSTS_PATH = "/v1/organization/costs";
  static final int CHUNK_BYTES = 64 * 1024;
  static final AsciiString TEXT_CSV = AsciiString.cached("text/csv; charset=utf-8");
  static final String RESULT_OBJECT = "organization.usage.completions.result";
  static final String COSTS_RESULT_OBJECT = "organization.costs.result";

  /** Receives results one by one; an IOException stops the query. */
  @FunctionalInterface
  interface RowSink<R> {
    void accept(R row) throws IOException;
  }

  /** Runs a bucketed query, handing each result to the sink in bucket then group order. */
  @FunctionalInterface
  interface Query<R> {
    void run(UsageQueries queries, UsageBucketQuery q, RowSink<R> sink) throws IOException;
  }

  /**
   * What one endpoint reads and writes.
   *
   * @param what the noun in error messages ("Usage", "Costs")
   * @param resultObject each JSON result's {@code object}
   * @param json the JSON result's fields after {@code object}
   * @param csv the CSV columns after {@code start_time,end_time}
   * @param bucket a result's bucket start
   */
  record Report<R>(
      String what,
      String resultObject,
      List<UsageColumn<R>> json,
      List<UsageColumn<R>> csv,
      Function<R, Instant> bucket,
      Query<R> query) {}

  static final Report<UsageBucketRow> COMPLETIONS =
      new Report<>(
          "Usage",
          RESULT_OBJECT,
          UsageColumn.COMPLETIONS,
          UsageColumn.COMPLETIONS,
          UsageBucketRow::bucket,
          (u, q, sink) -> u.buckets(q, sink::accept));

  static final Report<CostBucketRow> COSTS =
      new Report<>(
          "Costs",
          COSTS_RESULT_OBJECT,
          UsageColumn.COSTS_JSON,
          UsageColumn.COSTS_CSV,
          CostBucketRow::bucket,
          (u, q, sink) -> u.costBuckets(q, sink::accept));

  private final Authenticator auth;
  private final UsageQueries usage;
  private final Executor blocking;
  private final Clock clock;
  private final Duration rawRetention;
  private final Report<R> report;

  /**
   * @param rawRetention how long per-request records are kept (null: for good)
   */
  UsageCompletionsEndpoint(
      Authenticator auth,
      UsageQueries usage,
      Executor blocking,
      Clock clock,
      Duration rawRetention,
      Report<R> report) {
    this.auth = auth;
    this.usage = usage;
    this.blocking = blocking;
    this.clock = clock;
    this.rawRetention = rawRetention;
    this.report = report;
  }

  void handle(Exchange ex) {
    ex.then(auth.authenticate(ex), principal -> query(ex, principal));
  }

  private void query(Exchange ex, ApiKeyPrincipal principal) {
    UsageCompletionsRequest r = UsageCompletionsRequest.parse(ex, clock.instant(), rawRetention);
    if (principal.scope() == KeyScope.INFERENCE) {
      for (long k : r.apiKeyIds()) {
        if (k != principal.keyId()) {
          throw new ApiException(
              HttpResponseStatus.FORBIDDEN,
              ApiException.INVALID_REQUEST,
              "This key (scope inference) may read only its own usage (api key id "
                  + principal.keyId()
                  + "); 'api_key_ids' names key "
                  + k
                  + ". An account_admin key reads every key of its account.",
              "api_key_ids",
              "insufficient_scope");
        }
      }
    }
    Long onlyKey = OrganizationReads.onlyKey(principal);
    UsageBucketQuery q =
        new UsageBucketQuery(
            principal.accountId(),
            onlyKey,
            r.page(),
            r.pageEnd(),
            r.width(),
            r.groupBy(),
            r.models(),
            r.apiKeyIds());
    Body body = new Body(ex, r);
    CompletableFuture<Void> done;
    try {
      done =
          CompletableFuture.runAsync(
              () -> {
                try {
                  report.query().run(usage, q, body);
                  body.finish();
                } catch (IOException e) {
                  body.abort(); // the client went away, or stopped reading
                } catch (RuntimeException e) {
                  if (body.started()) {
                    body.abort();
                  } else {
                    body.release();
                    throw e;
                  }
                }
              },
              blocking);
    } catch (RejectedExecutionException e) {
      throw Authenticator.overloaded();
    }
    ex.then(
        done.exceptionally(
            e -> {
              throw OrganizationReads.unavailable(report.what(), e);
            }),
        v -> {});
  }

  /**
   * Writes the results into chunks as the cursor hands them over, on the blocking thread. The
   * response head goes out with the first chunk.
   */
  private final class Body extends OutputStream implements RowSink<R> {
    private final Exchange ex;
    private final UsageCompletionsRequest r;
    private final ByteBufAllocator alloc;
    private final JsonGenerator g;
    private final StringBuilder line = new StringBuilder(256);
    private ByteBuf buf;
    private ChunkedResponse stream;
    private long bucket; // JSON: start of the bucket being written, epoch seconds
    private boolean bucketOpen;

    Body(Exchange ex, UsageCompletionsRequest r) {
      this.ex = ex;
      this.r = r;
      this.alloc = ex.alloc();
      this.buf = alloc.buffer(CHUNK_BYTES + 1024);
      try {
        if (r.csv()) {
          g = null;
          line.append("start_time,end_time");
          for (UsageColumn<R> c : report.csv()) {
            line.append(',').append(c.name());
          }
          line.append('\n');
          flushLine();
        } else {
          g = Json.MAPPER.getFactory().createGenerator(this);
          g.writeStartObject();
          g.writeStringField("object", "page");
          g.writeArrayFieldStart("data");
          bucket = r.page().getEpochSecond();
        }
      } catch (IOException e) {
        throw new IllegalStateException("writing to memory failed", e);
      }
    }

    boolean started() {
      return stream != null;
    }

    @Override
    public void accept(R row) throws IOException {
      long b = report.bucket().apply(row).getEpochSecond();
      if (r.csv()) {
        line.append(b).append(',').append(b + r.width().seconds());
        for (UsageColumn<R> c : report.csv()) {
          line.append(',');
          c.writeCsv(line, row);
        }
        line.append('\n');
        flushLine();
      } else {
        advanceTo(b);
        if (!bucketOpen) {
          openBucket();
        }
        g.writeStartObject();
        g.writeStringField("object", report.resultObject());
        for (UsageColumn<R> c : report.json()) {
          c.writeJson(g, row);
        }
        g.writeEndObject();
        g.flush();
      }
      maybeSend();
    }

    /** Closes buckets (listing empty ones) until the one starting at {@code b} is current. */
    private void advanceTo(long b) throws IOException {
      while (bucket < b) {
        if (!bucketOpen) {
          openBucket();
        }
        closeBucket();
        bucket += r.width().seconds();
      }
    }

    private void openBucket() throws IOException {
      g.writeStartObject();
      g.writeStringField("object", "bucket");
      g.writeNumberField("start_time", bucket);
      g.writeNumberField("end_time", bucket + r.width().seconds());
      g.writeArrayFieldStart("results");
      bucketOpen = true;
    }

    private void closeBucket() throws IOException {
      g.writeEndArray();
      g.writeEndObject();
      bucketOpen = false;
    }

    void finish() throws IOException {
      if (!r.csv()) {
        advanceTo(r.pageEnd().getEpochSecond());
        g.writeEndArray();
        g.writeBooleanField("has_more", r.nextPage() != null);
        if (r.nextPage() == null) {
          g.writeNullField("next_page");
        } else {
          g.writeStringField("next_page", r.nextPage());
        }
        g.writeEndObject();
        g.close();
      }
      send();
      stream.finish();
    }

    void abort() {
      release();
      if (stream != null) {
        stream.abort();
      }
    }

    void release() {
      if (buf != null) {
        buf.release();
        buf = null;
      }
    }

    private void flushLine() {
      buf.writeCharSequence(line, StandardCharsets.UTF_8);
      line.setLength(0);
    }

    private void maybeSend() throws IOException {
      if (buf.readableBytes() >= CHUNK_BYTES) {
        send();
        buf = alloc.buffer(CHUNK_BYTES + 1024);
      }
    }

    /** Hands the current chunk to the connection (starting the response first) and waits. */
    private void send() throws IOException {
      if (stream == null) {
        stream = start();
      }
      ByteBuf chunk = buf;
      buf = null;
      stream.write(chunk);
    }

    /** Sends the head, on the event loop, and waits for it to be queued. */
    private ChunkedResponse start() throws IOException {
      CompletableFuture<ChunkedResponse> f = new CompletableFuture<>();
      ex.loop()
          .execute(
              () -> {
                try {
                  f.complete(
                      ex.respondChunked(
                          HttpResponseStatus.OK, r.csv() ? TEXT_CSV : Exchange.APPLICATION_JSON));
                } catch (RuntimeException | Error e) {
                  f.completeExceptionally(e);
                }
              });
      ChunkedResponse s;
      try {
        s = f.get(ChunkedResponse.WRITE_TIMEOUT_SECONDS, TimeUnit.SECONDS);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new IOException("interrupted while starting the response", e);
      } catch (ExecutionException | TimeoutException e) {
        throw new IOException("could not start the response", e);
      }
      if (s == null) {
        throw new IOException("the client went away before the response");
      }
      return s;
    }

    // OutputStream for the JSON generator: bytes go into the current chunk.

    @Override
    public void write(int b) {
      buf.writeByte(b);
    }

    @Override
    public void write(byte[] b, int off, int len) {
      buf.writeBytes(b, off, len);
    }

    @Override
    public void flush() {
      // chunks are sent by maybeSend, at result boundaries
    }

    @Override
    public void close() {
      // the buffer is owned by the chunk writer
    }
  }
}
