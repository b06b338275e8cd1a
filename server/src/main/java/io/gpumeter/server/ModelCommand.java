package io.gpumeter.server;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.io.PrintWriter;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code model list|load DIR|unload ID}: manages the models of a running server through its admin
 * API ({@code GET /v1/models} with the admin token is not possible, so {@code list} reads {@code
 * /readyz}, which needs no key), at {@code --url} or the configured host and port, with the
 * configured {@code admin.token}. Prints the server's JSON answer; exit status 1 with the server's
 * error message when it refuses.
 */
@Command(
    name = "model",
    mixinStandardHelpOptions = true,
    versionProvider = Main.Version.class,
    description = "Lists, loads or unloads the models of a running server (admin API).",
    subcommands = {
      ModelCommand.ListModels.class,
      ModelCommand.Load.class,
      ModelCommand.Unload.class
    })
final class ModelCommand {
  private static final Duration TIMEOUT = Duration.ofMinutes(10);

  /** Where the running server is, and how to call it. */
  static final class Target {
    @Mixin ConfigOption config;

    @Option(
        names = "--url",
        description = "the server's base URL (default: http://HOST:PORT from the settings)")
    String url;

    String base(ServerConfig settings) {
      if (url != null) {
        return url.endsWith("/") ? url.substring(0, url.length() - 1) : url;
      }
      String host = settings.host();
      if (host.equals("0.0.0.0") || host.equals("::")) {
        host = "127.0.0.1";
      }
      return "http://" + host + ":" + settings.port();
    }

    int call(CommandSpec spec, String method, String path, String body, boolean admin)
        throws IOException, InterruptedException {
      ServerConfig settings = config.load();
      if (admin && settings.adminToken() == null) {
        throw new IllegalArgumentException(
            "admin.token is not set in the settings; the admin API needs it");
      }
      HttpClient http =
          HttpClient.newBuilder()
              .version(HttpClient.Version.HTTP_1_1)
              .connectTimeout(Duration.ofSeconds(10))
              .build();
      HttpRequest.Builder req =
          HttpRequest.newBuilder(URI.create(base(settings) + path)).timeout(TIMEOUT);
      if (admin) {
        req.header("Authorization", "Bearer " + settings.adminToken());
      }
      if (method.equals("POST")) {
        req.header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(body));
      } else {
        req.GET();
      }
      HttpResponse<String> r = http.send(req.build(), HttpResponse.BodyHandlers.ofString());
      PrintWriter out = spec.commandLine().getOut();
      if (r.statusCode() / 100 != 2 && r.statusCode() != 503) {
        String message = r.body();
        try {
          JsonNode error = Json.MAPPER.readTree(r.body()).path("error");
          if (error.has("message")) {
            message = error.get("message").asText();
          }
        } catch (IOException e) {
          // not JSON: print the body as it is
        }
        spec.commandLine().getErr().println("error " + r.statusCode() + ": " + message);
        return 1;
      }
      out.println(r.body());
      out.flush();
      return r.statusCode() == 503 ? 1 : 0;
    }
  }

  @Command(name = "list", description = "Prints the served models and the failed directories.")
  static final class ListModels implements Callable<Integer> {
    @Spec CommandSpec spec;
    @Mixin Target target;

    @Override
    public Integer call() throws Exception {
      return target.call(spec, "GET", "/readyz", null, false);
    }
  }

  @Command(name = "load", description = "Loads and warms a model directory while serving.")
  static final class Load implements Callable<Integer> {
    @Spec CommandSpec spec;
    @Mixin Target target;

    @Parameters(index = "0", description = "the model directory, as the server sees it")
    Path dir;

    @Override
    public Integer call() throws Exception {
      String body =
          Json.MAPPER
              .createObjectNode()
              .put("directory", dir.toAbsolutePath().normalize().toString())
              .toString();
      return target.call(spec, "POST", "/admin/models/load", body, true);
    }
  }

  @Command(
      name = "unload",
      description = "Stops serving a model after its running requests finish, and frees it.")
  static final class Unload implements Callable<Integer> {
    @Spec CommandSpec spec;
    @Mixin Target target;

    @Parameters(index = "0", description = "the model id")
    String id;

    @Override
    public Integer call() throws Exception {
      if (!id.matches("[A-Za-z0-9][A-Za-z0-9._:-]*")) {
        throw new IllegalArgumentException("not a model id: " + id);
      }
      return target.call(spec, "POST", "/admin/models/" + id + "/unload", "", true);
    }
  }
}
