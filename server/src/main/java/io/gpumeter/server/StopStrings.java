package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.StopCondition;
import io.gpumeter.model.IncrementalDecoder;
import io.gpumeter.model.Tokenizer;
import java.util.ArrayList;
import java.util.List;

/**
 * The {@code stop} parameter: up to {@value #MAX} strings; the generation ends as soon as its text
 * contains one, and the text returned ends just before it (the stop string itself is never
 * returned, also when it spans several tokens).
 *
 * <p>Three uses, one rule: {@link #condition} is the scheduler-side check (the sequence finishes at
 * the token that completes a stop string, so no step runs past it); {@link #cut} trims a finished
 * text; {@link Holdback} trims a stream while it is written, holding back only a tail that could
 * still become a stop string.
 */
final class StopStrings {
  static final int MAX = 4;
  static final StopStrings NONE = new StopStrings(List.of());

  private final List<String> stops;
  private final int maxLength;

  private StopStrings(List<String> stops) {
    this.stops = List.copyOf(stops);
    int max = 0;
    for (String s : stops) {
      max = Math.max(max, s.length());
    }
    this.maxLength = max;
  }

  /**
   * Parses {@code stop}: absent or null, a string, or an array of 1 to 4 strings; empty strings are
   * refused (they would stop before the first token).
   *
   * @throws ApiException 400 naming {@code stop}
   */
  static StopStrings parse(JsonNode v) {
    if (v == null || v.isNull()) {
      return NONE;
    }
    List<String> out = new ArrayList<>();
    if (v.isTextual()) {
      out.add(v.textValue());
    } else if (v.isArray()) {
      if (v.size() > MAX) {
        throw ApiException.invalid(
            "stop", "'stop' holds at most " + MAX + " strings, got " + v.size() + ".");
      }
      for (JsonNode e : v) {
        if (!e.isTextual()) {
          throw ApiException.invalid(
              "stop",
              "'stop' must be a string or an array of strings; an element is not a string.");
        }
        out.add(e.textValue());
      }
    } else {
      throw ApiException.wrongType("stop", "a string or an array of strings", describe(v));
    }
    for (String s : out) {
      if (s.isEmpty()) {
        throw ApiException.invalid("stop", "a stop string must not be empty.");
      }
    }
    return out.isEmpty() ? NONE : new StopStrings(out);
  }

  private static String describe(JsonNode v) {
    return v.isNumber() ? "a number" : v.isBoolean() ? "a boolean" : "an object";
  }

  boolean isEmpty() {
    return stops.isEmpty();
  }

  List<String> strings() {
    return stops;
  }

  /** The first index at or after {@code from} where a stop string begins, or -1. */
  int find(CharSequence text, int from) {
    int best = -1;
    String s = text.toString();
    for (String stop : stops) {
      int i = s.indexOf(stop, from);
      if (i >= 0 && (best < 0 || i < best)) {
        best = i;
      }
    }
    return best;
  }

  /** {@code text} up to (not including) its first stop string. */
  String cut(String text) {
    int i = find(text, 0);
    return i < 0 ? text : text.substring(0, i);
  }

  /** The length of the longest suffix of {@code text} that is a proper prefix of a stop string. */
  int prefixTail(CharSequence text) {
    int n = text.length();
    for (int len = Math.min(n, maxLength - 1); len > 0; len--) {
      for (String stop : stops) {
        if (len < stop.length() && regionEquals(text, n - len, stop, len)) {
          return len;
        }
      }
    }
    return 0;
  }

  private static boolean regionEquals(CharSequence text, int at, String stop, int len) {
    for (int i = 0; i < len; i++) {
      if (text.charAt(at + i) != stop.charAt(i)) {
        return false;
      }
    }
    return true;
  }

  /**
   * The scheduler-side check for one request: decodes the tokens as they come (never inside a
   * character) and answers true at the token whose text completes a stop string. Keeps only the
   * last characters that a stop string could span. Each choice gets its own ({@link
   * StopCondition#forChoice}), so each stops on its own text. Runs on the scheduler thread.
   */
  StopCondition condition(Tokenizer tokenizer) {
    if (stops.isEmpty()) {
      return StopCondition.NONE;
    }
    return new Condition(tokenizer);
  }

  /** One choice's check, with the text it decoded so far. */
  private final class Condition implements StopCondition {
    private final Tokenizer tokenizer;
    private final IncrementalDecoder decoder;
    private final StringBuilder text = new StringBuilder();

    Condition(Tokenizer tokenizer) {
      this.tokenizer = tokenizer;
      this.decoder = new IncrementalDecoder(tokenizer);
    }

    @Override
    public StopCondition forChoice(int index) {
      return new Condition(tokenizer);
    }

    @Override
    public boolean stopsAfter(int token) {
      String piece = decoder.add(token);
      if (piece.isEmpty()) {
        return false;
      }
      int from = Math.max(0, text.length() - maxLength + 1);
      text.append(piece);
      if (find(text, from) >= 0) {
        return true;
      }
      if (text.length() > 4 * maxLength) {
        text.delete(0, text.length() - maxLength);
      }
      return false;
    }
  }

  /** Stream-side trimming for one response; used on its event loop. */
  final class Holdback {
    private final StringBuilder pending = new StringBuilder();
    private boolean stopped;

    /** Adds decoded text; returns what can be sent now (never a stop string, nor past one). */
    String offer(String piece) {
      if (stopped || piece.isEmpty()) {
        return "";
      }
      if (stops.isEmpty()) {
        return piece;
      }
      pending.append(piece);
      int at = find(pending, 0);
      if (at >= 0) {
        stopped = true;
        String out = pending.substring(0, at);
        pending.setLength(0);
        return out;
      }
      int send = pending.length() - prefixTail(pending);
      String out = pending.substring(0, send);
      pending.delete(0, send);
      return out;
    }

    /** The stream ended without a stop string in the held tail: what was held back is sent. */
    String finish() {
      if (stopped) {
        return "";
      }
      String out = pending.toString();
      pending.setLength(0);
      return out;
    }
  }

  Holdback holdback() {
    return new Holdback();
  }
}
