package io.gpumeter.server;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A strict parser of the Prometheus text format 0.0.4, written from the format's description (not
 * from the client library that writes it), for tests: every line must be a {@code # HELP}, a {@code
 * # TYPE} or a sample of the family last declared; labels must be well formed; no series may
 * repeat; a histogram's buckets must be cumulative and end with {@code le="+Inf"} equal to its
 * {@code _count}. Any violation throws {@link IllegalArgumentException} naming the line.
 */
final class PrometheusText {
  private static final String NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
  private static final Pattern HELP = Pattern.compile("# HELP (" + NAME + ") (.*)");
  private static final Pattern TYPE =
      Pattern.compile("# TYPE (" + NAME + ") (counter|gauge|histogram|summary|untyped)");
  private static final Pattern SAMPLE =
      Pattern.compile(
          "(" + NAME + ")(\\{(?:[^\"}]|\"(?:[^\"\\\\]|\\\\.)*\")*\\})? (\\S+)( -?[0-9]+)?");
  private static final Pattern LABEL =
      Pattern.compile("([a-zA-Z_][a-zA-Z0-9_]*)=\"((?:[^\"\\\\\\n]|\\\\[\\\\\"n])*)\"(,|$)");

  /** One sample: metric name, labels in written order, value. */
  record Sample(String name, Map<String, String> labels, double value) {}

  private final Map<String, String> types = new LinkedHashMap<>();
  private final List<Sample> samples = new ArrayList<>();

  private PrometheusText() {}

  static PrometheusText parse(String text) {
    PrometheusText p = new PrometheusText();
    if (!text.isEmpty() && !text.endsWith("\n")) {
      throw new IllegalArgumentException("exposition does not end with a newline");
    }
    String family = null;
    Set<String> series = new LinkedHashSet<>();
    int n = 0;
    for (String line : text.split("\n", -1)) {
      n++;
      if (line.isEmpty()) {
        continue;
      }
      Matcher m;
      if ((m = HELP.matcher(line)).matches()) {
        continue;
      }
      if ((m = TYPE.matcher(line)).matches()) {
        family = m.group(1);
        if (p.types.put(family, m.group(2)) != null) {
          throw bad(n, line, "family declared twice");
        }
        continue;
      }
      if (line.startsWith("#")) {
        throw bad(n, line, "unknown comment");
      }
      if (!(m = SAMPLE.matcher(line)).matches()) {
        throw bad(n, line, "not a sample");
      }
      String name = m.group(1);
      if (family == null || !belongs(name, family, p.types.get(family))) {
        throw bad(n, line, "sample outside its family (" + family + ")");
      }
      Map<String, String> labels = labels(n, line, m.group(2));
      double value = value(n, line, m.group(3));
      if (!series.add(name + new TreeMap<>(labels))) {
        throw bad(n, line, "series repeated");
      }
      p.samples.add(new Sample(name, labels, value));
    }
    p.checkHistograms();
    return p;
  }

  private static boolean belongs(String name, String family, String type) {
    if (type.equals("histogram")) {
      return name.equals(family + "_bucket")
          || name.equals(family + "_count")
          || name.equals(family + "_sum");
    }
    if (type.equals("summary")) {
      return name.equals(family) || name.equals(family + "_count") || name.equals(family + "_sum");
    }
    return name.equals(family);
  }

  private static Map<String, String> labels(int n, String line, String braces) {
    Map<String, String> labels = new LinkedHashMap<>();
    if (braces == null || braces.equals("{}")) {
      return labels;
    }
    String inner = braces.substring(1, braces.length() - 1);
    Matcher m = LABEL.matcher(inner);
    int at = 0;
    while (at < inner.length()) {
      if (!m.find(at) || m.start() != at) {
        throw bad(n, line, "bad label at offset " + at);
      }
      String value = m.group(2).replace("\\n", "\n").replace("\\\"", "\"").replace("\\\\", "\\");
      if (labels.put(m.group(1), value) != null) {
        throw bad(n, line, "label repeated");
      }
      at = m.end();
    }
    return labels;
  }

  private static double value(int n, String line, String v) {
    switch (v) {
      case "+Inf":
        return Double.POSITIVE_INFINITY;
      case "-Inf":
        return Double.NEGATIVE_INFINITY;
      case "NaN":
        return Double.NaN;
      default:
        try {
          return Double.parseDouble(v);
        } catch (NumberFormatException e) {
          throw bad(n, line, "bad value " + v);
        }
    }
  }

  private void checkHistograms() {
    for (Map.Entry<String, String> t : types.entrySet()) {
      if (!t.getValue().equals("histogram")) {
        continue;
      }
      String family = t.getKey();
      Map<Map<String, String>, Double> counts = new LinkedHashMap<>();
      Map<Map<String, String>, double[]> last = new LinkedHashMap<>(); // {le, cumulative}
      for (Sample s : samples) {
        if (s.name.equals(family + "_count")) {
          counts.put(s.labels, s.value);
        } else if (s.name.equals(family + "_bucket")) {
          Map<String, String> key = new LinkedHashMap<>(s.labels);
          String le = key.remove("le");
          if (le == null) {
            throw new IllegalArgumentException(family + "_bucket without le: " + s.labels);
          }
          double bound = value(0, s.toString(), le);
          double[] prev = last.get(key);
          if (prev != null && !(bound > prev[0] && s.value >= prev[1])) {
            throw new IllegalArgumentException(family + " buckets not cumulative at " + s);
          }
          last.put(key, new double[] {bound, s.value});
        }
      }
      if (!last.keySet().equals(counts.keySet())) {
        throw new IllegalArgumentException(family + ": buckets and counts for different series");
      }
      for (Map.Entry<Map<String, String>, double[]> e : last.entrySet()) {
        double[] top = e.getValue();
        if (top[0] != Double.POSITIVE_INFINITY || top[1] != counts.get(e.getKey())) {
          throw new IllegalArgumentException(
              family
                  + e.getKey()
                  + ": +Inf bucket "
                  + top[1]
                  + " != count "
                  + counts.get(e.getKey()));
        }
      }
    }
  }

  private static IllegalArgumentException bad(int n, String line, String why) {
    return new IllegalArgumentException("line " + n + ": " + why + ": " + line);
  }

  /** Family name to type, in the order declared. */
  Map<String, String> types() {
    return types;
  }

  List<Sample> samples() {
    return samples;
  }

  /** The value of the one sample named {@code name} whose labels include {@code labels}. */
  double value(String name, Map<String, String> labels) {
    double found = Double.NaN;
    int matches = 0;
    for (Sample s : samples) {
      if (s.name.equals(name) && s.labels.entrySet().containsAll(labels.entrySet())) {
        found = s.value;
        matches++;
      }
    }
    if (matches != 1) {
      throw new IllegalArgumentException(
          matches + " samples match " + name + labels + " (want exactly 1)");
    }
    return found;
  }

  /** The sum over the samples named {@code name} whose labels include {@code labels} (0: none). */
  double sum(String name, Map<String, String> labels) {
    double sum = 0;
    for (Sample s : samples) {
      if (s.name.equals(name) && s.labels.entrySet().containsAll(labels.entrySet())) {
        sum += s.value;
      }
    }
    return sum;
  }
}
