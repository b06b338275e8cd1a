package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;

/** A real server for tests: the repository's model, an embedded PostgreSQL, port 0. */
public final class TestServers {
  private TestServers() {}

  /** The repository root: the first directory upwards holding both mvnw and models/. */
  public static Path repoRoot() {
    Path dir = Path.of("").toAbsolutePath();
    while (dir != null) {
      if (Files.isDirectory(dir.resolve("models")) && Files.exists(dir.resolve("mvnw"))) {
        return dir;
      }
      dir = dir.getParent();
    }
    throw new IllegalStateException("no models/ found above " + Path.of("").toAbsolutePath());
  }

  /** Loopback, ephemeral port, CPU, a fresh data folder under target/. */
  public static ServerConfig.Builder config(String name) throws IOException {
    Path data = Path.of("target", "test-data", name + "-" + System.nanoTime()).toAbsolutePath();
    Files.createDirectories(data);
    return ServerConfig.builder()
        .host("127.0.0.1")
        .port(0)
        .device("cpu")
        .modelsDir(repoRoot().resolve("models"))
        .dataDir(data)
        // one root-safe repack of the PostgreSQL binaries for the whole build
        .set("db.binary_cache_dir", Path.of("target", "pg-binaries").toAbsolutePath().toString())
        .set("shutdown.grace", "10s")
        // tests back-date price history; the lead itself is PriceChangeReceiptsTest's
        .set("pricing.min_lead", "0s");
  }

  /** The shared folder of the root-safe PostgreSQL binaries (one repack per build). */
  public static Path binaryCache() {
    return Path.of("target", "pg-binaries").toAbsolutePath();
  }

  /** HTTP/1.1 client (the JDK's default would try an h2c upgrade). */
  public static final class Client {
    private final HttpClient http =
        HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(10))
            .build();
    private final String base;

    public Client(int port) {
      this.base = "http://127.0.0.1:" + port;
    }

    public HttpRequest.Builder request(String path, String key) {
      HttpRequest.Builder b =
          HttpRequest.newBuilder(URI.create(base + path)).timeout(Duration.ofSeconds(120));
      if (key != null) {
        b.header("Authorization", "Bearer " + key);
      }
      return b;
    }

    public Reply post(String path, String key, String body)
        throws IOException, InterruptedException {
      return send(
          request(path, key)
              .header("Content-Type", "application/json")
              .POST(HttpRequest.BodyPublishers.ofString(body))
              .build());
    }

    public Reply get(String path, String key) throws IOException, InterruptedException {
      return send(request(path, key).GET().build());
    }

    public Reply send(HttpRequest req) throws IOException, InterruptedException {
      return Reply.of(http.send(req, HttpResponse.BodyHandlers.ofString()));
    }

    public CompletableFuture<Reply> postAsync(String path, String key, String body) {
      return http.sendAsync(
              request(path, key)
                  .header("Content-Type", "application/json")
                  .POST(HttpRequest.BodyPublishers.ofString(body))
                  .build(),
              HttpResponse.BodyHandlers.ofString())
          .thenApply(Reply::of);
    }
  }

  /** A response with its body parsed as JSON where it is JSON. */
  public record Reply(int status, HttpResponse<String> raw, JsonNode json) {
    public static Reply of(HttpResponse<String> r) {
      JsonNode json = null;
      if (r.headers().firstValue("content-type").orElse("").startsWith("application/json")) {
        try {
          json = Json.MAPPER.readTree(r.body());
        } catch (IOException e) {
          throw new AssertionError("response is not JSON: " + r.body(), e);
        }
      }
      return new Reply(r.statusCode(), r, json);
    }

    public String header(String name) {
      return raw.headers().firstValue(name).orElse(null);
    }

    @Override
    public String toString() {
      return status + " " + raw.body();
    }
  }
}
