package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The {@code model} command ({@link ModelCommand}) against a real running server with the real
 * models: {@code list} shows what is served, {@code load DIR} serves a second model while the first
 * keeps serving (completions on it work), {@code unload ID} stops it (completions get 404), and
 * each refusal is exit status 1 with the server's message on stderr and nothing on stdout, with the
 * served models unchanged: a directory that does not exist, a model already served, an unknown id,
 * a wrong admin token; a malformed id or a missing {@code admin.token} is exit status 2 without a
 * call.
 */
class ModelCommandTest {
  private static final String TOKEN = "admin-token-for-model-command-test";
  private static final String DEMO = "demo-byte-lm";
  private static final String LLAMA = "tiny-llama-bpe";

  private static GpumeterServer server;
  private static Client client;
  private static CreatedApiKey key;
  private static Path llamaDir;
  private static String url;
  private static Path config;
  private static Path wrongToken;
  private static Path noToken;

  @BeforeAll
  static void start() throws Exception {
    Path repoModels = TestServers.repoRoot().resolve("models");
    Path base =
        Files.createDirectories(
            Path.of("target", "test-data", "model-cli-" + System.nanoTime()).toAbsolutePath());
    Path modelsDir = Files.createDirectories(base.resolve("models"));
    Files.createSymbolicLink(modelsDir.resolve(DEMO), repoModels.resolve(DEMO));
    llamaDir = repoModels.resolve(LLAMA).toAbsolutePath().normalize();
    server =
        GpumeterServer.start(
            TestServers.config("model-cli").modelsDir(modelsDir).set("admin.token", TOKEN).build(),
            StepListener.NONE);
    client = new Client(server.port());
    key = server.billing().apiKeys().create("model-cli");
    url = "http://127.0.0.1:" + server.port();
    config = Files.writeString(base.resolve("cli.properties"), "admin.token=" + TOKEN + "\n");
    wrongToken =
        Files.writeString(base.resolve("wrong.properties"), "admin.token=not-the-token-0123\n");
    noToken = Files.writeString(base.resolve("none.properties"), "# no admin.token\n");
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  @Test
  void listLoadUnloadAgainstARunningServerAndEachRefusal() throws Exception {
    Cli list = ok("model", "list");
    assertThat(served(list)).containsExactly(DEMO);

    // load while serving: the CLI prints the server's description of the new model
    Cli loaded = ok("model", "load", llamaDir.toString());
    JsonNode model = Json.MAPPER.readTree(loaded.out());
    assertThat(model.get("id").asText()).isEqualTo(LLAMA);
    assertThat(model.get("parameters").asLong()).isEqualTo(1_054_848L);
    assertThat(served(ok("model", "list"))).containsExactlyInAnyOrder(DEMO, LLAMA);
    assertCompletes(LLAMA);
    assertCompletes(DEMO);

    // refusals: exit 1, the server's message, nothing printed, nothing changed
    refused("already served", "error 400", "already served", "model", "load", llamaDir.toString());
    refused(
        "missing dir",
        "error 400",
        "not found",
        "model",
        "load",
        llamaDir.resolveSibling("no-such-model").toString());
    refused("unknown id", "error 404", "", "model", "unload", "no-such-model");
    Cli wrong = run("model", "unload", LLAMA, "--url", url, "--config", wrongToken.toString());
    assertThat(wrong.status()).as(wrong.toString()).isEqualTo(1);
    assertThat(wrong.err()).as(wrong.toString()).startsWith("error 401: ");
    assertThat(wrong.out()).isEmpty();
    assertThat(served(ok("model", "list"))).containsExactlyInAnyOrder(DEMO, LLAMA);

    // bad input on our side: exit 2 without calling the server
    Cli badId = cli("model", "unload", "../admin");
    assertThat(badId.status()).as(badId.toString()).isEqualTo(2);
    assertThat(badId.err()).contains("not a model id: ../admin");
    Cli none = run("model", "unload", LLAMA, "--url", url, "--config", noToken.toString());
    assertThat(none.status()).as(none.toString()).isEqualTo(2);
    assertThat(none.err()).contains("admin.token is not set");
    assertThat(served(ok("model", "list"))).containsExactlyInAnyOrder(DEMO, LLAMA);

    // unload: the model is gone, requests for it get 404, the other one serves
    Cli unloaded = ok("model", "unload", LLAMA);
    assertThat(Json.MAPPER.readTree(unloaded.out()).get("unloaded").asBoolean()).isTrue();
    assertThat(served(ok("model", "list"))).containsExactly(DEMO);
    Reply gone = complete(LLAMA);
    assertThat(gone.status()).as(gone.toString()).isEqualTo(404);
    assertThat(gone.json().get("error").get("code").asText()).isEqualTo("model_not_found");
    assertCompletes(DEMO);
  }

  private static List<String> served(Cli list) throws Exception {
    List<String> names = new ArrayList<>();
    for (JsonNode m : Json.MAPPER.readTree(list.out()).get("models")) {
      names.add(m.asText());
    }
    return names;
  }

  private static Reply complete(String model) throws Exception {
    return client.post(
        "/v1/completions",
        key.plaintext(),
        "{\"model\":\"" + model + "\",\"prompt\":\"The \",\"max_tokens\":4,\"temperature\":0}");
  }

  private static void assertCompletes(String model) throws Exception {
    Reply r = complete(model);
    assertThat(r.status()).as(r.toString()).isEqualTo(200);
    assertThat(r.json().get("model").asText()).isEqualTo(model);
    assertThat(r.json().get("usage").get("completion_tokens").asInt()).isPositive();
  }

  private static void refused(String what, String status, String message, String... args) {
    Cli r = cli(args);
    assertThat(r.status()).as(what + ": " + r).isEqualTo(1);
    assertThat(r.err()).as(what + ": " + r).startsWith(status + ": ").contains(message);
    assertThat(r.out()).as(what + ": " + r).isEmpty();
  }

  private static Cli ok(String... args) {
    Cli r = cli(args);
    assertThat(r.status()).as(r.toString()).isZero();
    assertThat(r.err()).as(r.toString()).isEmpty();
    return r;
  }

  private static Cli cli(String... args) {
    List<String> all = new ArrayList<>(List.of(args));
    all.addAll(List.of("--url", url, "--config", config.toString()));
    return run(all.toArray(String[]::new));
  }

  record Cli(int status, String out, String err) {}

  private static Cli run(String... args) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int status =
        Main.run(
            args,
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8));
    return new Cli(
        status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }
}
