package io.gpumeter.server;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/**
 * Deterministic mutated HTTP requests for fuzzing: case {@code i} of a seed is always the same
 * bytes, whatever order or thread asks for it. Each case starts from a valid request (health,
 * readiness, models, usage, a small completion) and applies one to three mutations to its method,
 * target, version, headers, body, encoding or framing. A case whose mutations break the message
 * framing (a wrong or doubled {@code Content-Length}, a broken chunk, a body without a length) is
 * marked: the server may close such a connection without an answer.
 */
final class HttpMutator {
  /** One request to send as is. */
  record Case(long index, byte[] bytes, boolean framingError, String mutations) {
    String text() {
      return new String(bytes, StandardCharsets.ISO_8859_1);
    }
  }

  private static final String[] TOKENS = {
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "1e30",
    "-1",
    "0",
    "\\u0000",
    "\\ud800",
    "\u00ff",
    "\u2028",
    "99999999999999999999",
    "NaN",
    "'",
    "\\",
    "\t",
    "/*",
    "1e400"
  };

  private static final String[] VALUES = {
    "0",
    "-1",
    "1",
    "2",
    "3",
    "1e30",
    "1e400",
    "-1e400",
    "2.5",
    "2.0",
    "\"x\"",
    "\"\"",
    "null",
    "true",
    "[]",
    "{}",
    "[\"a\"]",
    "99999999999999999999",
    "-0.0",
    "1.0",
    "9223372036854775808",
    "-9223372036854775809",
    "\"\\u0000\""
  };

  private static final String[] FIELDS = {
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "seed",
    "n",
    "top_p",
    "stream",
    "user",
    "logit_bias",
    "stop"
  };

  private static final String[] PATH_INSERTS = {
    "%zz",
    "%",
    "%4",
    "%00",
    "%ff",
    "%2e%2e",
    "/../",
    "//",
    "?",
    "#",
    "%u0041",
    "\u00e9",
    ";",
    "&&",
    "?start=%zz",
    "?start=%2B999999999-01-01T00:00:00Z",
    "?end=-1",
    "=%"
  };

  private static final String[] TARGETS = {
    "/",
    "*",
    "http://x/healthz",
    "/v1/models/%2e%2e",
    "/v1/usage?start=2025-13-45T00:00:00Z",
    "/v1/usage?start=%2B999999999-01-01T00:00:00Z",
    "/v1/usage?start=1969-01-01T00:00:00Z&end=1970-01-02T00:00:00Z",
    "/v1/usage?start=&end=",
    "/v1/usage?start=2025-01-01T00:00:00Z&end=2024-01-01T00:00:00Z",
    "/v1/models/demo-byte-lm%zz",
    "/admin/reconcile?from=%zz",
    "/admin/reconcile",
    "/v1//completions",
    "/v1/completions?x=%",
    "/healthz?" + "a=b&".repeat(200),
    "/" + "a".repeat(5000)
  };

  private static final String[] METHODS = {
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "FOO", "get", "CONNECT", "TRACE"
  };

  private static final String[] VERSIONS = {
    "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "HTTX/1.1", "HTTP/1.1 extra", "http/1.1"
  };

  private final long seed;
  private final String key;

  HttpMutator(long seed, String key) {
    this.seed = seed;
    this.key = key;
  }

  private static final class Request {
    String method;
    String target;
    String version = "HTTP/1.1";
    final List<String[]> headers = new ArrayList<>();
    byte[] body = new byte[0];
    boolean chunked;
    String chunkedBreak;
    int lengthDelta;
    boolean noLength;
    boolean framingError;

    void header(String name, String value) {
      headers.add(new String[] {name, value});
    }

    void removeHeader(String name) {
      headers.removeIf(h -> h[0].equalsIgnoreCase(name));
    }
  }

  Case generate(long index) {
    SplittableRandom r = new SplittableRandom(seed + index * 0x9E3779B97F4A7C15L);
    Request q = template(r);
    int n = 1 + r.nextInt(3);
    StringBuilder names = new StringBuilder();
    for (int i = 0; i < n; i++) {
      names.append(mutate(r, q)).append(' ');
    }
    return new Case(index, serialize(q), q.framingError, names.toString().trim());
  }

  private Request template(SplittableRandom r) {
    Request q = new Request();
    q.header("Host", "127.0.0.1");
    q.header("Connection", "close");
    switch (r.nextInt(7)) {
      case 0 -> get(q, "/healthz", false);
      case 1 -> get(q, "/readyz", false);
      case 2 -> get(q, "/v1/models", true);
      case 3 -> get(q, "/v1/models/demo-byte-lm", true);
      case 4 -> get(q, "/v1/usage?start=2025-01-01T00:00:00Z&end=2025-01-02T00:00:00Z", true);
      default -> {
        q.method = "POST";
        q.target = "/v1/completions";
        q.header("Authorization", "Bearer " + key);
        q.header("Content-Type", "application/json");
        q.body =
            ("{\"model\":\"demo-byte-lm\",\"prompt\":\"Fuzz "
                    + r.nextInt(1000)
                    + " \",\"max_tokens\":"
                    + (1 + r.nextInt(3))
                    + ",\"temperature\":0,\"seed\":"
                    + r.nextInt(100)
                    + "}")
                .getBytes(StandardCharsets.UTF_8);
      }
    }
    return q;
  }

  private void get(Request q, String target, boolean auth) {
    q.method = "GET";
    q.target = target;
    if (auth) {
      q.header("Authorization", "Bearer " + key);
    }
  }

  private static String pick(SplittableRandom r, String[] from) {
    return from[r.nextInt(from.length)];
  }

  private String mutate(SplittableRandom r, Request q) {
    switch (r.nextInt(22)) {
      case 0 -> {
        if (q.body.length > 0) {
          q.body[r.nextInt(q.body.length)] = (byte) r.nextInt(256);
        }
        return "flip";
      }
      case 1 -> {
        q.body = insert(q.body, r.nextInt(q.body.length + 1), pick(r, TOKENS));
        return "insert";
      }
      case 2 -> {
        if (q.body.length > 0) {
          int from = r.nextInt(q.body.length);
          int to = from + r.nextInt(q.body.length - from + 1);
          byte[] b = new byte[q.body.length - (to - from)];
          System.arraycopy(q.body, 0, b, 0, from);
          System.arraycopy(q.body, to, b, from, q.body.length - to);
          q.body = b;
        }
        return "delete";
      }
      case 3, 4 -> {
        String body = new String(q.body, StandardCharsets.UTF_8);
        String field = pick(r, FIELDS);
        String value = pick(r, VALUES);
        String replaced =
            body.contains("\"" + field + "\":")
                ? body.replaceFirst(
                    "\"" + field + "\":(\"[^\"]*\"|[^,}]*)",
                    "\"" + field + "\":" + value.replace("\\", "\\\\").replace("$", "\\$"))
                : body.startsWith("{")
                    ? "{\"" + field + "\":" + value + "," + body.substring(1)
                    : body;
        q.body = replaced.getBytes(StandardCharsets.UTF_8);
        return "value:" + field;
      }
      case 5 -> {
        int depth = 100 + r.nextInt(5000);
        q.body =
            ("[".repeat(depth) + "]".repeat(r.nextBoolean() ? depth : 0))
                .getBytes(StandardCharsets.US_ASCII);
        return "nesting";
      }
      case 6 -> {
        byte[] b = new byte[r.nextInt(300)];
        for (int i = 0; i < b.length; i++) {
          b[i] = (byte) r.nextInt(256);
        }
        q.body = b;
        return "random-body";
      }
      case 7, 8 -> {
        int at = r.nextInt(q.target.length() + 1);
        q.target = q.target.substring(0, at) + pick(r, PATH_INSERTS) + q.target.substring(at);
        return "path-insert";
      }
      case 9 -> {
        q.target = pick(r, TARGETS);
        return "target";
      }
      case 10 -> {
        q.method = pick(r, METHODS);
        return "method";
      }
      case 11 -> {
        q.version = pick(r, VERSIONS);
        return "version";
      }
      case 12 -> {
        String[] names = {"Host", "Content-Type", "Authorization", "Connection"};
        q.removeHeader(names[r.nextInt(names.length)]);
        return "remove-header";
      }
      case 13 -> {
        q.removeHeader("Authorization");
        String[] auths = {
          "Bearer ",
          "Bearer",
          "Basic dXNlcjpwYXNz",
          "Bearer " + key.substring(0, key.length() - 1) + (key.endsWith("a") ? "b" : "a"),
          "Bearer gm_" + "x".repeat(40),
          "Bearer " + key + " extra",
          "bearer " + key,
          "Bearer " + "k".repeat(9000),
          "Bearer \u00e9\u00e9"
        };
        q.header("Authorization", pick(r, auths));
        return "auth";
      }
      case 14 -> {
        String[][] junk = {
          {"X-Junk", "\u00ff\u00fe"},
          {"X-Long", "v".repeat(9000)},
          {"Bad Name", "x"},
          {"", "empty-name"},
          {"Content-Type", "text/plain; charset=utf-16"},
          {"Content-Type", "application/json; charset=\u00ff"},
          {"Expect", "100-continue"},
          {"Expect", "something-else"},
          {"Accept", "application/openmetrics-text; version=1.0.0"},
          {"Connection", "keep-alive, Upgrade"},
          {"Upgrade", "h2c"},
          {"X-Many", "a\tb"}
        };
        String[] h = junk[r.nextInt(junk.length)];
        q.header(h[0], h[1]);
        if (r.nextInt(4) == 0) {
          for (int i = 0; i < 150; i++) {
            q.header("X-N" + i, "v");
          }
        }
        return "junk-header";
      }
      case 15 -> {
        q.header("Content-Length", Integer.toString(r.nextInt(100)));
        q.framingError = true;
        return "double-length";
      }
      case 16 -> {
        q.lengthDelta = 1 + r.nextInt(50);
        q.framingError = true;
        return "length-too-big";
      }
      case 17 -> {
        q.lengthDelta = -(1 + r.nextInt(Math.max(1, q.body.length)));
        q.framingError = true;
        return "length-too-small";
      }
      case 18 -> {
        q.chunked = true;
        return "chunked";
      }
      case 19 -> {
        q.chunked = true;
        q.chunkedBreak = pick(r, new String[] {"zz", "-1", "FFFFFFFFFFFFFFFFFF", "", "1;;;"});
        q.framingError = true;
        return "bad-chunk";
      }
      case 20 -> {
        if (q.body.length > 0) {
          q.noLength = true;
          q.framingError = true;
        }
        return "no-length";
      }
      default -> {
        // the same body in UTF-16: not JSON as sent
        q.body = new String(q.body, StandardCharsets.UTF_8).getBytes(StandardCharsets.UTF_16);
        return "utf16";
      }
    }
  }

  private static byte[] insert(byte[] body, int at, String text) {
    byte[] t = text.getBytes(StandardCharsets.UTF_8);
    byte[] b = new byte[body.length + t.length];
    System.arraycopy(body, 0, b, 0, at);
    System.arraycopy(t, 0, b, at, t.length);
    System.arraycopy(body, at, b, at + t.length, body.length - at);
    return b;
  }

  private static byte[] serialize(Request q) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    StringBuilder head = new StringBuilder();
    head.append(q.method).append(' ').append(q.target).append(' ').append(q.version);
    head.append("\r\n");
    for (String[] h : q.headers) {
      head.append(h[0]).append(": ").append(h[1]).append("\r\n");
    }
    if (q.chunked) {
      head.append("Transfer-Encoding: chunked\r\n");
    } else if (!q.noLength && (q.body.length > 0 || q.method.equals("POST"))) {
      head.append("Content-Length: ").append(Math.max(0, q.body.length + q.lengthDelta));
      head.append("\r\n");
    }
    head.append("\r\n");
    out.writeBytes(head.toString().getBytes(StandardCharsets.UTF_8));
    if (q.chunked) {
      int at = 0;
      int piece = 1;
      while (at < q.body.length) {
        int len = Math.min(piece, q.body.length - at);
        out.writeBytes((Integer.toHexString(len) + "\r\n").getBytes(StandardCharsets.US_ASCII));
        out.write(q.body, at, len);
        out.writeBytes("\r\n".getBytes(StandardCharsets.US_ASCII));
        at += len;
        piece = piece * 3 + 1;
      }
      String end = q.chunkedBreak != null ? q.chunkedBreak + "\r\n" : "0\r\n\r\n";
      out.writeBytes(end.getBytes(StandardCharsets.US_ASCII));
    } else {
      out.writeBytes(q.body);
    }
    return out.toByteArray();
  }
}
