package io.gpumeter.server;

import io.gpumeter.batching.FinishReason;
import io.gpumeter.batching.Generation;
import io.gpumeter.batching.GenerationResult;
import io.gpumeter.batching.TokenListener;
import io.gpumeter.model.IncrementalDecoder;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelFuture;
import io.netty.channel.EventLoop;
import java.nio.charset.StandardCharsets;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One streamed generation written as server-sent events: {@code data: {chunk}\n\n} per event,
 * ending with {@code data: [DONE]\n\n}, OpenAI's wire format.
 *
 * <p><b>Threads:</b> {@link #listener()} runs on the scheduler thread for every generated token; it
 * only hands the token id to the connection's event loop ({@link EventLoop#execute}, a non-blocking
 * offer) and returns. Everything else runs on the event loop. Tokens and the result are handed over
 * in the order the scheduler produced them (the loop's task queue is FIFO and the result's
 * continuation is queued after the last token), so the finishing chunk always follows the text.
 *
 * <p><b>Text:</b> tokens are decoded with an {@link IncrementalDecoder} (a piece never ends inside
 * a UTF-8 character) and trimmed by the request's {@link StopStrings.Holdback} (only a tail that
 * could still become a stop string is held back). A token that completes no character or is held
 * back sends nothing; every other token sends its piece at once, the first one included.
 *
 * <p><b>Slow readers:</b> after each write, if more than {@code maxUnsentBytes} of this
 * connection's output wait in the server (Netty's outbound buffer, filled once the kernel's buffers
 * are full), the connection is dropped. The exchange is then abandoned like any disconnect: the
 * generation is cancelled at its next step and charged for the steps it ran (invariant 2). So a
 * stream never makes the server buffer more than that bound plus one event.
 *
 * <p><b>Delivery:</b> the stream counts as delivered once the write of the chunk that carries the
 * {@code finish_reason} succeeded (the whole text is then with the kernel). {@link #delivered()}
 * tells the abandon hook whether a finished generation's answer reached the client (invariant 15).
 */
final class SseStream {
  private static final Logger log = LoggerFactory.getLogger(SseStream.class);

  private static final byte[] DATA = "data: ".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] END = "\n\n".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] DONE = "data: [DONE]\n\n".getBytes(StandardCharsets.US_ASCII);

  /** Writes the JSON of one chunk; {@code text} is the new text (may be empty). */
  interface Format {
    /** The first event, before any text (chat: {@code delta.role}); null for none. */
    Json.Writer opening();

    Json.Writer text(String text, String finishReason);

    /** The usage event; {@code receipt} holds its cost fields. */
    Json.Writer usage(GenerationResult result, Receipt receipt);
  }

  private final Exchange ex;
  private final Format format;
  private final IncrementalDecoder decoder;
  private final StopStrings.Holdback holdback;
  private final long maxUnsentBytes;
  private Generation generation;
  private boolean delivered;
  private boolean dropped;

  SseStream(
      Exchange ex,
      Format format,
      IncrementalDecoder decoder,
      StopStrings.Holdback holdback,
      long maxUnsentBytes) {
    this.ex = ex;
    this.format = format;
    this.decoder = decoder;
    this.holdback = holdback;
    this.maxUnsentBytes = maxUnsentBytes;
  }

  /** A {@code data:} event holding the JSON {@code writer} writes (the caller owns the buffer). */
  static ByteBuf event(ByteBufAllocator alloc, Json.Writer writer) {
    return Unpooled.wrappedBuffer(
        Unpooled.wrappedBuffer(DATA), Json.write(alloc, writer), Unpooled.wrappedBuffer(END));
  }

  /** The scheduler-side listener: hands each token to the event loop. */
  TokenListener listener(TokenListener also) {
    EventLoop loop = ex.loop();
    return token -> {
      also.onToken(token);
      loop.execute(() -> onToken(token));
    };
  }

  /** Sends the head (and the opening event); the generation is cancelled if the stream is cut. */
  void start(Generation generation) {
    this.generation = generation;
    if (!ex.startStream()) {
      return;
    }
    Json.Writer opening = format.opening();
    if (opening != null) {
      write(opening);
    }
  }

  private void onToken(int token) {
    if (ex.isDone()) {
      return;
    }
    String text = holdback.offer(decoder.add(token));
    if (!text.isEmpty()) {
      write(format.text(text, null));
    }
  }

  /**
   * The generation finished with STOP or LENGTH: the rest of the text and the finish reason. The
   * caller then waits for the charge and calls {@link #close}.
   */
  void finish(GenerationResult result) {
    String text = holdback.offer(decoder.flush()) + holdback.finish();
    String reason = result.finishReason().openAiName();
    ChannelFuture f = write(format.text(text, reason));
    if (f != null) {
      f.addListener(
          w -> {
            if (w.isSuccess()) {
              delivered = true;
            }
          });
    }
  }

  /** The charge is settled: the usage event when asked for, then {@code [DONE]}, and the end. */
  void close(GenerationResult result, boolean includeUsage, Receipt receipt) {
    if (ex.isDone()) {
      return;
    }
    if (includeUsage) {
      write(format.usage(result, receipt));
    }
    if (!ex.isDone()) {
      ex.writeStream(Unpooled.wrappedBuffer(DONE));
      ex.endStream();
    }
  }

  /** Whether the finishing chunk (the whole text) was handed to the kernel. */
  boolean delivered() {
    return delivered;
  }

  static boolean finished(GenerationResult r) {
    return r.finishReason() == FinishReason.STOP || r.finishReason() == FinishReason.LENGTH;
  }

  private ChannelFuture write(Json.Writer writer) {
    if (ex.isDone() || dropped) {
      return null;
    }
    ChannelFuture f = ex.writeStream(event(ex.alloc(), writer));
    long unsent = ex.unsentBytes();
    if (unsent > maxUnsentBytes) {
      dropped = true;
      log.warn(
          "stream {} to {}: {} bytes unsent (limit {}); dropping the connection and cancelling",
          generation == null ? "?" : generation.requestId(),
          ex.remoteAddress(),
          unsent,
          maxUnsentBytes);
      ex.dropConnection();
    }
    return f;
  }
}
