package io.gpumeter.server;

import io.gpumeter.billing.BucketWidth;
import io.gpumeter.billing.UsageGroup;
import io.netty.handler.codec.http.HttpHeaderNames;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/**
 * The validated query of {@code GET /v1/organization/usage/completions}; every rule names the
 * offending parameter in its 400 (server/README.md, "Usage API").
 *
 * <p>Buckets are whole UTC minutes, hours or days: {@code start_time} is rounded down and {@code
 * end_time} up to the bucket width. List parameters may be repeated, sent with brackets ({@code
 * group_by[]=model}) or comma-separated.
 *
 * @param start first bucket's start (rounded down)
 * @param end last bucket's end (rounded up), after {@code start}
 * @param limit buckets per page (JSON); CSV has no pages
 * @param page the first bucket of this page (from {@code page}), or {@code start}
 * @param csv whether the answer is CSV ({@code format=csv}, or {@code Accept: text/csv})
 */
record UsageCompletionsRequest(
    Instant start,
    Instant end,
    BucketWidth width,
    Set<UsageGroup> groupBy,
    List<String> models,
    List<Long> apiKeyIds,
    int limit,
    Instant page,
    boolean csv) {

  /** Latest time accepted (the last second of year 9999), as {@code /v1/usage}. */
  static final long MAX_TIME = UsageEndpoint.MAX_TIME.getEpochSecond();

  static final String PAGE_PREFIX = "page_";

  private static final Set<String> KNOWN =
      Set.of(
          "start_time",
          "end_time",
          "bucket_width",
          "group_by",
          "group_by[]",
          "models",
          "models[]",
          "api_key_ids",
          "api_key_ids[]",
          "limit",
          "page",
          "format");

  /** OpenAI's parameters that have no meaning here: refused rather than silently ignored. */
  private static final Set<String> UNSUPPORTED =
      Set.of("project_ids", "project_ids[]", "user_ids", "user_ids[]", "batch");

  /** Default and most buckets per page, per width (as OpenAI's: 60/1440, 24/168, 7/31). */
  static int defaultLimit(BucketWidth w) {
    return switch (w) {
      case MINUTE -> 60;
      case HOUR -> 24;
      case DAY -> 7;
    };
  }

  static int maxLimit(BucketWidth w) {
    return switch (w) {
      case MINUTE -> 1_440;
      case HOUR -> 168;
      case DAY -> 31;
    };
  }

  /**
   * @param now the server's clock (default {@code end_time})
   * @param rawRetention how long raw records are kept (null: for good); 1-minute buckets and
   *     grouping by session read them, so their range must start inside it
   * @throws ApiException 400 naming the parameter for every invalid query
   */
  static UsageCompletionsRequest parse(Exchange ex, Instant now, Duration rawRetention) {
    for (String name : ex.queryNames()) {
      if (UNSUPPORTED.contains(name)) {
        throw ApiException.invalid(
            name,
            "'" + name + "' is not supported by this server (it has no projects, users or batch).");
      }
      if (!KNOWN.contains(name)) {
        throw ApiException.invalid(name, "Unrecognized request argument supplied: " + name);
      }
    }
    BucketWidth width = BucketWidth.DAY;
    String w = ex.query("bucket_width");
    if (w != null) {
      try {
        width = BucketWidth.parse(w);
      } catch (IllegalArgumentException e) {
        throw ApiException.invalid(
            "bucket_width", "'bucket_width' must be 1m, 1h or 1d; got '" + shorten(w) + "'.");
      }
    }
    String startText = ex.query("start_time");
    if (startText == null || startText.isEmpty()) {
      throw ApiException.missing("start_time");
    }
    long startSec = seconds(startText, "start_time");
    long endSec = now.getEpochSecond();
    String endText = ex.query("end_time");
    if (endText != null && !endText.isEmpty()) {
      endSec = seconds(endText, "end_time");
    }
    if (endSec <= startSec) {
      throw ApiException.invalid(
          "end_time", "'end_time' (" + endSec + ") must be after 'start_time' (" + startSec + ").");
    }
    Instant start = Instant.ofEpochSecond(width.floor(startSec));
    Instant end = Instant.ofEpochSecond(width.ceil(endSec));

    Set<UsageGroup> groups = EnumSet.noneOf(UsageGroup.class);
    for (String g : list(ex, "group_by")) {
      try {
        groups.add(UsageGroup.parse(g));
      } catch (IllegalArgumentException e) {
        throw ApiException.invalid("group_by", "'group_by': " + shorten(e.getMessage()) + ".");
      }
    }
    List<String> models = new ArrayList<>(new LinkedHashSet<>(list(ex, "models")));
    List<Long> keys = new ArrayList<>();
    for (String k : new LinkedHashSet<>(list(ex, "api_key_ids"))) {
      if (k.isEmpty() || k.length() > 18 || !k.chars().allMatch(c -> c >= '0' && c <= '9')) {
        throw ApiException.invalid(
            "api_key_ids",
            "'api_key_ids' holds key ids (positive integers, see GET /admin/keys); got '"
                + shorten(k)
                + "'.");
      }
      keys.add(Long.parseLong(k));
    }

    boolean csv = wantsCsv(ex);
    int limit = defaultLimit(width);
    String l = ex.query("limit");
    if (l != null) {
      if (csv) {
        throw ApiException.invalid(
            "limit", "CSV returns every bucket of the range; narrow start_time/end_time instead.");
      }
      long n = -1;
      if (!l.isEmpty() && l.length() <= 9 && l.chars().allMatch(c -> c >= '0' && c <= '9')) {
        n = Long.parseLong(l);
      }
      if (n < 1 || n > maxLimit(width)) {
        throw ApiException.invalid(
            "limit",
            "'limit' must be an integer from 1 to "
                + maxLimit(width)
                + " for bucket_width "
                + width.apiName()
                + "; got '"
                + shorten(l)
                + "'.");
      }
      limit = (int) n;
    }
    Instant page = start;
    String p = ex.query("page");
    if (p != null) {
      if (csv) {
        throw ApiException.invalid(
            "page", "CSV returns every bucket of the range; narrow start_time/end_time instead.");
      }
      page = page(p, start, end, width);
    }

    boolean raw = width == BucketWidth.MINUTE || groups.contains(UsageGroup.SESSION_ID);
    if (raw && rawRetention != null && start.isBefore(now.minus(rawRetention))) {
      throw ApiException.invalid(
          "start_time",
          "1-minute buckets and grouping by session_id read the per-request records, which are"
              + " kept "
              + rawRetention.toDays()
              + " days; 'start_time' must be after "
              + now.minus(rawRetention)
              + " (use 1h or 1d buckets for older usage).");
    }
    return new UsageCompletionsRequest(start, end, width, groups, models, keys, limit, page, csv);
  }

  /** The page's range end: {@code limit} buckets after {@link #page}, at most {@link #end}. */
  Instant pageEnd() {
    if (csv) {
      return end;
    }
    long e = page.getEpochSecond() + (long) limit * width.seconds();
    return e >= end.getEpochSecond() ? end : Instant.ofEpochSecond(e);
  }

  /** The cursor of the page after this one, or null on the last page. */
  String nextPage() {
    Instant e = pageEnd();
    return e.isBefore(end) ? PAGE_PREFIX + e.getEpochSecond() : null;
  }

  private static boolean wantsCsv(Exchange ex) {
    String format = ex.query("format");
    if (format != null) {
      return switch (format) {
        case "csv" -> true;
        case "json" -> false;
        default ->
            throw ApiException.invalid(
                "format", "'format' must be json or csv; got '" + shorten(format) + "'.");
      };
    }
    String accept = ex.request().headers().get(HttpHeaderNames.ACCEPT);
    return accept != null && accept.toLowerCase(Locale.ROOT).contains("text/csv");
  }

  private static Instant page(String p, Instant start, Instant end, BucketWidth width) {
    String digits = p.startsWith(PAGE_PREFIX) ? p.substring(PAGE_PREFIX.length()) : "";
    if (!digits.isEmpty()
        && digits.length() <= 12
        && digits.chars().allMatch(c -> c >= '0' && c <= '9')) {
      long t = Long.parseLong(digits);
      if (width.floor(t) == t && t >= start.getEpochSecond() && t < end.getEpochSecond()) {
        return Instant.ofEpochSecond(t);
      }
    }
    throw ApiException.invalid(
        "page",
        "'page' must be a next_page value returned for the same start_time, end_time and"
            + " bucket_width; got '"
            + shorten(p)
            + "'.");
  }

  private static long seconds(String text, String param) {
    if (!text.isEmpty()
        && text.length() <= 12
        && text.chars().allMatch(c -> c >= '0' && c <= '9')) {
      long v = Long.parseLong(text);
      if (v <= MAX_TIME) {
        return v;
      }
    }
    throw ApiException.invalid(
        param,
        "'"
            + param
            + "' must be a time in unix seconds from 0 to "
            + MAX_TIME
            + "; got '"
            + shorten(text)
            + "'.");
  }

  /** Values of {@code name} and {@code name[]}, repeated or comma-separated, trimmed, non-empty. */
  private static List<String> list(Exchange ex, String name) {
    List<String> out = new ArrayList<>();
    for (String n : List.of(name, name + "[]")) {
      for (String v : ex.queryAll(n)) {
        for (String part : v.split(",", -1)) {
          String t = part.trim();
          if (!t.isEmpty()) {
            out.add(t);
          }
        }
      }
    }
    return out;
  }

  private static String shorten(String text) {
    return text.length() > 100 ? text.substring(0, 100) + "..." : text;
  }
}
