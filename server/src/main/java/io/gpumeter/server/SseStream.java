package io.gpumeter.server;

import io.gpumeter.batching.FinishReason;
import io.gpumeter.batching.Generation;
import io.gpumeter.batching.GenerationResult;
import io.gpumeter.batching.TokenListener;
import io.gpumeter.batching.TokenLogprob;
import io.gpumeter.model.IncrementalDecoder;
import io.gpumeter.model.Tokenizer;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelFuture;
import io.netty.channel.EventLoop;
import io.netty.util.internal.PlatformDependent;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Queue;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One streamed generation (one choice or several) written as server-sent events: {@code data:
 * {chunk}\n\n} per event, ending with {@code data: [DONE]\n\n}, OpenAI's wire format.
 *
 * <p><b>Threads:</b> {@link #listener} runs on the scheduler thread for every generated token; it
 * only puts the token in this stream's queue (lock-free) and returns. When the step's tokens are
 * all out ({@link TokenListener#onStepEnd}) it queues one drain of that queue on the connection's
 * event loop ({@link EventLoop#execute}, a non-blocking offer) unless one is waiting there already:
 * one hand-off per stream per step, all of a step's at once, so an event loop wakes about once per
 * step for its streams rather than once per token (issue 12 item 3: the per-token wake-ups were
 * most of streaming's extra server CPU). Everything else runs on the event loop. The result can
 * complete during a step, before that step's hand-off: {@link #finish} therefore first takes every
 * token still queued (all of them were queued before the result completed), so the finishing chunk
 * always carries, and follows, all of the text.
 *
 * <p><b>Coalescing (issue 12 item 8):</b> a drain takes every token queued so far and writes one
 * event per choice with all their text, then flushes once. While the event loop keeps up that is
 * one event per token, sent as soon as it exists; when it falls behind (a loaded machine, many
 * streams on one loop), the tokens of several steps leave in one event and one write instead of one
 * per token. A text event without logprobs is written from bytes pre-encoded once per choice
 * ({@link TextEventTemplate}) instead of a JSON document per token.
 *
 * <p><b>Text:</b> tokens are decoded with an {@link IncrementalDecoder} (a piece never ends inside
 * a UTF-8 character) and trimmed by the request's {@link StopStrings.Holdback} (only a tail that
 * could still become a stop string is held back). A token that completes no character or is held
 * back sends nothing; every other token's piece goes out with the drain that reads it, the first
 * one included.
 *
 * <p><b>Slow readers:</b> after each write, if more than {@code maxUnsentBytes} of this
 * connection's output wait in the server (Netty's outbound buffer, filled once the kernel's buffers
 * are full), the connection is dropped. The exchange is then abandoned like any disconnect: the
 * generation is cancelled at its next step and charged for the steps it ran (invariant 2). So a
 * stream never makes the server buffer more than that bound plus one event.
 *
 * <p><b>Choices:</b> with {@code n > 1} every choice has its own decoder and its own chunks, each
 * carrying the choice's {@code index}; the chunks of different choices interleave (one per choice
 * with new text per drain, in choice order), and each choice ends with its own {@code
 * finish_reason} chunk.
 *
 * <p><b>Logprobs:</b> each text chunk carries the logprobs of the tokens that begin in the text
 * sent so far (a token held back by the decoder or a stop-string holdback waits for the chunk that
 * sends its text; the tokens of a stop string that is cut off are never sent).
 *
 * <p><b>Echo:</b> with {@code echo} (completions), each choice's stream starts with its prompt's
 * text, as OpenAI's does: that text goes into the choice's lane as already decoded and sent text
 * (stop strings do not apply to it), so it leaves in the choice's first text chunk, ahead of the
 * generated text, and the generated tokens' {@code text_offset}s count from the start of the echoed
 * text. With {@code logprobs} the scheduler hands each prompt's logprobs over when its prefill
 * ends, before any of its choices' tokens ({@link TokenListener#onPromptLogprobs}, through the same
 * queue as the tokens); the echoed text then waits for them, and its chunk carries the prompt's
 * tokens (the first unscored, as OpenAI's) before the generated ones.
 *
 * <p><b>Delivery:</b> the stream counts as delivered once the writes of every chunk that carries a
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
    default Json.Writer opening() {
      return opening(0);
    }

    /** The first event of choice {@code index}, before its text; null for none. */
    Json.Writer opening(int index);

    default Json.Writer text(String text, String finishReason) {
      return text(0, text, finishReason, null);
    }

    /**
     * A chunk of choice {@code index}: its new text, its finish reason (null until the last chunk),
     * and the logprobs of the tokens whose text it completes (null when not asked for).
     */
    Json.Writer text(int index, String text, String finishReason, LogprobsJson.Span logprobs);

    /** The usage event; {@code receipt} holds its cost fields. */
    Json.Writer usage(GenerationResult result, Receipt receipt);
  }

  private final Exchange ex;
  private final Format format;
  private final long maxUnsentBytes;
  private final boolean logprobs;
  private final Lane[] lanes;
  private int unfinished;
  private Generation generation;
  private boolean delivered;
  private boolean dropped;

  /**
   * Whether {@link #start} sent the head. Before it (the head waits for the receipt's funds) the
   * text waits in its lane's {@code unsent}, the one buffer before the head: drains only take
   * tokens then, and {@link #finish} and {@link #close} come after {@code start}.
   */
  private boolean started;

  /**
   * A token on its way from the scheduler thread to the event loop, or (with {@code prompt} set)
   * the logprobs of prompt {@code choice}'s tokens for its echo.
   */
  private record Queued(int choice, int token, TokenLogprob logprob, List<TokenLogprob> prompt) {}

  /**
   * Each prompt's echoed text (for {@code echo}), with the prompt's tokens and their text offsets
   * for its logprobs.
   *
   * @param texts each prompt's text
   * @param prompts each prompt's tokens
   * @param offsets where each prompt token's text begins in its prompt's text ({@link
   *     LogprobsJson#offsets}); null without logprobs
   * @param n choices per prompt: choice {@code i} echoes prompt {@code i / n}
   */
  record Echo(String[] texts, int[][] prompts, int[][] offsets, int n) {
    /** The echo of {@code prompts}; {@code logprobs} null when the request has none. */
    static Echo of(int[][] prompts, int n, Tokenizer tokenizer, LogprobsJson logprobs) {
      String[] texts = new String[prompts.length];
      int[][] offsets = logprobs == null ? null : new int[prompts.length][];
      for (int p = 0; p < prompts.length; p++) {
        texts[p] = tokenizer.decode(prompts[p]);
        if (offsets != null) {
          offsets[p] = logprobs.offsets(prompts[p]);
        }
      }
      return new Echo(texts, prompts, offsets, n);
    }
  }

  /** Null without {@code echo}. */
  private final Echo echo;

  private final Queue<Queued> queued = PlatformDependent.newMpscQueue();
  private final AtomicBoolean drainQueued = new AtomicBoolean();

  /**
   * One choice's text: its decoder, its stop-string holdback and, with logprobs, the logprobs of
   * its tokens not sent yet with the text offsets they begin at.
   */
  private static final class Lane {
    final IncrementalDecoder decoder;
    final StopStrings.Holdback holdback;
    final List<TokenLogprob> pending = new ArrayList<>();
    int[] pendingOffsets = new int[16];
    int decodedChars;
    int sentChars;

    /** Text taken from the holdback in this drain, not written yet; null when none. */
    String unsent;

    /** This choice's pre-encoded text event; made at its first text. */
    TextEventTemplate template;

    Lane(IncrementalDecoder decoder, StopStrings.Holdback holdback) {
      this.decoder = decoder;
      this.holdback = holdback;
    }
  }

  /** A stream of one choice without logprobs. */
  SseStream(
      Exchange ex,
      Format format,
      IncrementalDecoder decoder,
      StopStrings.Holdback holdback,
      long maxUnsentBytes) {
    this(ex, format, () -> decoder, () -> holdback, maxUnsentBytes, false, 1, null);
  }

  /**
   * @param decoders a new decoder for each choice
   * @param holdbacks a new stop-string holdback for each choice
   * @param logprobs whether the tokens carry logprobs: each text chunk then carries those of the
   *     tokens that begin in its choice's text sent so far
   * @param n the request's choices: each has its own chunks, which carry its {@code index}
   * @param echo each choice's prompt text, sent first; null without {@code echo}
   */
  SseStream(
      Exchange ex,
      Format format,
      Supplier<IncrementalDecoder> decoders,
      Supplier<StopStrings.Holdback> holdbacks,
      long maxUnsentBytes,
      boolean logprobs,
      int n,
      Echo echo) {
    this.ex = ex;
    this.format = format;
    this.maxUnsentBytes = maxUnsentBytes;
    this.logprobs = logprobs;
    this.echo = echo;
    this.lanes = new Lane[n];
    for (int i = 0; i < n; i++) {
      lanes[i] = new Lane(decoders.get(), holdbacks.get());
      if (echo != null && !logprobs) {
        addEcho(lanes[i], echo.texts()[i / echo.n()]); // with logprobs: when they arrive
      }
    }
  }

  /** The prompt's text, as sent text ahead of anything generated (stop strings skip it). */
  private static void addEcho(Lane lane, String text) {
    lane.decodedChars += text.length();
    lane.sentChars += text.length();
    if (!text.isEmpty()) {
      lane.unsent = lane.unsent == null ? text : text + lane.unsent;
    }
  }

  /**
   * On the event loop: prompt {@code prompt}'s logprobs arrived; each of its choices' lanes gets
   * the echoed text with the prompt's tokens' logprobs, the first one unscored.
   */
  private void onEcho(int prompt, List<TokenLogprob> promptLogprobs) {
    int[] tokens = echo.prompts()[prompt];
    int[] offsets = echo.offsets()[prompt];
    for (int i = prompt * echo.n(); i < (prompt + 1) * echo.n(); i++) {
      Lane lane = lanes[i];
      for (int t = 0; t < tokens.length; t++) {
        addPending(lane, t == 0 ? LogprobsJson.unscored(tokens[0]) : promptLogprobs.get(t - 1));
        lane.pendingOffsets[lane.pending.size() - 1] = offsets[t];
      }
      addEcho(lane, echo.texts()[prompt]);
    }
  }

  private static void addPending(Lane lane, TokenLogprob logprob) {
    if (lane.pending.size() == lane.pendingOffsets.length) {
      lane.pendingOffsets = Arrays.copyOf(lane.pendingOffsets, lane.pendingOffsets.length * 2);
    }
    lane.pendingOffsets[lane.pending.size()] = lane.decodedChars;
    lane.pending.add(logprob);
  }

  /** A {@code data:} event holding the JSON {@code writer} writes (the caller owns the buffer). */
  static ByteBuf event(ByteBufAllocator alloc, Json.Writer writer) {
    return Unpooled.wrappedBuffer(
        Unpooled.wrappedBuffer(DATA), Json.write(alloc, writer), Unpooled.wrappedBuffer(END));
  }

  /**
   * The scheduler-side listener: queues each token of every choice for the event loop and, unless a
   * drain is already queued there, queues one ({@link EventLoop#execute}, a non-blocking offer);
   * {@code also} sees choice 0's tokens on the scheduler thread.
   */
  TokenListener listener(TokenListener also) {
    EventLoop loop = ex.loop();
    Runnable drain = this::drain;
    return new TokenListener() {
      @Override
      public void onToken(int token) {
        onChoiceToken(0, token, null);
      }

      @Override
      public void onChoiceToken(int choice, int token, TokenLogprob logprob) {
        if (choice == 0) {
          also.onToken(token);
        }
        queued.offer(new Queued(choice, token, logprob, null)); // handed over at the step's end
      }

      @Override
      public void onStepEnd() {
        if (!queued.isEmpty() && !drainQueued.get() && drainQueued.compareAndSet(false, true)) {
          loop.execute(drain);
        }
      }

      @Override
      public void onPromptLogprobs(int prompt, List<TokenLogprob> logprobs) {
        if (echo == null || !SseStream.this.logprobs) {
          return; // the echo went in at the start
        }
        queued.offer(new Queued(prompt, 0, null, logprobs)); // handed over at the step's end
      }
    };
  }

  /**
   * Sends the head (with the headers the exchange holds now), the opening events and the text that
   * arrived before it; the generation is cancelled if the stream is cut.
   */
  void start(Generation generation) {
    this.generation = generation;
    started = true;
    if (!ex.startStream()) {
      return;
    }
    boolean opened = false;
    for (int i = 0; i < lanes.length; i++) {
      Json.Writer opening = format.opening(i);
      if (opening != null) {
        opened |= write(opening, false) != null; // flushed with the text that arrived before
      }
    }
    if (!writeUnsent() && opened) { // the text that arrived before the head
      ex.flushStream();
    }
  }

  /**
   * On the event loop: every token queued so far, decoded into its choice's text, then one event
   * per choice that has new text and one flush. The flag is cleared before the queue is read, so a
   * token queued meanwhile is read by this drain or by the one its listener queues.
   */
  private void drain() {
    drainQueued.set(false);
    take();
    if (ex.isDone() || !started) {
      return; // before the head, the text waits in its lane for start()
    }
    writeUnsent();
  }

  /** Every queued token (and prompt logprobs) into its choice's lane, unwritten. */
  private void take() {
    Queued q;
    while ((q = queued.poll()) != null) {
      if (ex.isDone()) {
        continue;
      }
      if (q.prompt() != null) {
        onEcho(q.choice(), q.prompt());
      } else {
        onToken(q.choice(), q.token(), q.logprob());
      }
    }
  }

  /** One event per choice with text not sent yet, then one flush; whether it wrote any. */
  private boolean writeUnsent() {
    boolean wrote = false;
    for (int i = 0; i < lanes.length; i++) {
      Lane lane = lanes[i];
      if (lane.unsent != null) {
        String text = lane.unsent;
        lane.unsent = null;
        wrote |= writeText(i, lane, text) != null;
      }
    }
    if (wrote) {
      ex.flushStream();
    }
    return wrote;
  }

  private void onToken(int choice, int token, TokenLogprob logprob) {
    Lane lane = lanes[choice];
    String piece = lane.decoder.add(token);
    if (logprobs && logprob != null) {
      addPending(lane, logprob);
    }
    lane.decodedChars += piece.length();
    String text = lane.holdback.offer(piece);
    if (!text.isEmpty()) {
      lane.sentChars += text.length();
      lane.unsent = lane.unsent == null ? text : lane.unsent + text;
    }
  }

  /**
   * One text event of choice {@code index} (pre-encoded when it carries no logprobs), unflushed.
   */
  private ChannelFuture writeText(int index, Lane lane, String text) {
    LogprobsJson.Span lp = takeLogprobs(lane);
    if (lp == null && !ex.isDone() && !dropped) {
      if (lane.template == null) {
        lane.template = TextEventTemplate.of(ex.alloc(), format, index);
      }
      ByteBuf event = lane.template == null ? null : lane.template.encode(ex.alloc(), text);
      if (event != null) {
        return checked(ex.writeStream(event, false));
      }
    }
    return write(format.text(index, text, null, lp), false);
  }

  /**
   * The waiting logprobs of the tokens that begin in the lane's text sent so far (they leave the
   * wait); null without logprobs.
   */
  private LogprobsJson.Span takeLogprobs(Lane lane) {
    if (!logprobs) {
      return null;
    }
    int n = 0;
    while (n < lane.pending.size() && lane.pendingOffsets[n] < lane.sentChars) {
      n++;
    }
    List<TokenLogprob> taken = List.copyOf(lane.pending.subList(0, n));
    int[] offsets = Arrays.copyOf(lane.pendingOffsets, n);
    lane.pending.subList(0, n).clear();
    System.arraycopy(lane.pendingOffsets, n, lane.pendingOffsets, 0, lane.pending.size());
    return LogprobsJson.Span.of(taken, offsets, n);
  }

  /**
   * The generation finished with STOP or LENGTH: each choice's rest of the text and finish reason.
   * The caller then waits for the charge and calls {@link #close}.
   */
  void finish(GenerationResult result) {
    take(); // tokens of the result's last step, queued before it completed, not handed over yet
    unfinished = lanes.length;
    for (int i = 0; i < lanes.length; i++) {
      Lane lane = lanes[i];
      String rest = lane.holdback.offer(lane.decoder.flush()) + lane.holdback.finish();
      lane.sentChars += rest.length();
      String text = lane.unsent == null ? rest : lane.unsent + rest; // taken above, unwritten
      lane.unsent = null;
      FinishReason why =
          i < result.choices().size()
              ? result.choices().get(i).finishReason()
              : result.finishReason();
      ChannelFuture f = write(format.text(i, text, why.openAiName(), takeLogprobs(lane)));
      if (f != null) {
        f.addListener(
            w -> {
              if (w.isSuccess() && --unfinished == 0) {
                delivered = true; // every choice's finishing chunk went out
              }
            });
      }
    }
  }

  /**
   * The charge is settled: the usage event when asked for, then {@code [DONE]}, and the end, whose
   * trailers carry the receipt ({@link StreamReceipts#trailers}).
   */
  void close(GenerationResult result, boolean includeUsage, Receipt receipt) {
    if (ex.isDone()) {
      return;
    }
    if (includeUsage) {
      write(format.usage(result, receipt), false); // flushed with the end: one write, not three
    }
    if (!ex.isDone()) {
      ex.writeStream(Unpooled.wrappedBuffer(DONE), false);
      ex.endStream(StreamReceipts.trailers(ex, result.usage(), receipt));
    }
  }

  /** Whether the finishing chunk (the whole text) was handed to the kernel. */
  boolean delivered() {
    return delivered;
  }

  static boolean finished(GenerationResult r) {
    return r.finishReason() == FinishReason.STOP
        || r.finishReason() == FinishReason.LENGTH
        || r.finishReason() == FinishReason.INSUFFICIENT_QUOTA; // an answer, cut short
  }

  private ChannelFuture write(Json.Writer writer) {
    return write(writer, true);
  }

  private ChannelFuture write(Json.Writer writer, boolean flush) {
    if (ex.isDone() || dropped) {
      return null;
    }
    if (!started) {
      throw new IllegalStateException("an event before the stream's head");
    }
    return checked(ex.writeStream(event(ex.alloc(), writer), flush));
  }

  /** Drops the connection once more than {@code maxUnsentBytes} wait in the server. */
  private ChannelFuture checked(ChannelFuture f) {
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
