package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.KeyScope;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The web console in a real browser: starts a real server, makes keys in two accounts and
 * completions with them, then runs {@code server/src/main/console/e2e/console.e2e.mjs} with the
 * machine's {@code node}: Playwright ({@code playwright-core}) drives Debian's chromium ({@code
 * /usr/bin/chromium}, or {@code $CHROMIUM}) headless. The script signs in with a key and checks the
 * chart totals against {@code /v1/organization/usage/completions} for the same range (three bucket
 * widths and groupings), that account B's data is unreachable from A's session, keyboard navigation
 * of the tabs, sign-out, and that a key revoked in the operator view gets 401 on its next request;
 * it saves screenshots under {@code target/console-e2e/}. Its output is printed and kept in {@code
 * target/console-e2e/output.log}; the test fails unless it exits 0.
 */
@Timeout(600)
class ConsoleBrowserTest {
  private static final String TOKEN = "admin-token-for-browser-tests-7";
  private static final Path OUT = Path.of("target", "console-e2e").toAbsolutePath();
  private static GpumeterServer server;

  @BeforeAll
  static void start() throws Exception {
    server =
        GpumeterServer.start(
            TestServers.config("console-browser").set("admin.token", TOKEN).build(),
            StepListener.NONE);
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  private static String chromium() {
    String fromEnv = System.getenv("CHROMIUM");
    return fromEnv != null && !fromEnv.isBlank() ? fromEnv : "/usr/bin/chromium";
  }

  @Test
  void aCustomerAndAnOperatorUseTheConsoleInChromium() throws Exception {
    assertThat(Path.of(chromium()))
        .as("chromium for the browser test (.ci/run installs Debian's chromium)")
        .isExecutable();
    Path console = TestServers.repoRoot().resolve("server/src/main/console");
    assertThat(console.resolve("node_modules/playwright-core"))
        .as("playwright-core, installed by the Maven build's npm ci")
        .isDirectory();

    var keys = server.billing().apiKeys();
    CreatedApiKey adminA = keys.create("browser-acme", KeyScope.ACCOUNT_ADMIN);
    CreatedApiKey a1 = keys.create("browser-acme");
    CreatedApiKey revokeMe = keys.create("browser-acme");
    CreatedApiKey b1 = keys.create("browser-globex");
    Client client = new Client(server.port());
    List<CreatedApiKey> callers = List.of(adminA, a1, a1, b1, b1, revokeMe);
    for (int i = 0; i < callers.size(); i++) {
      Reply r =
          client.post(
              "/v1/completions",
              callers.get(i).plaintext(),
              "{\"model\":\"demo-byte-lm\",\"prompt\":\"Console "
                  + i
                  + "\",\"max_tokens\":"
                  + (2 + i)
                  + "}");
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
    }

    Files.createDirectories(OUT);
    Path log = OUT.resolve("output.log");
    List<String> command = new ArrayList<>(List.of("node", "e2e/console.e2e.mjs"));
    ProcessBuilder pb =
        new ProcessBuilder(command)
            .directory(console.toFile())
            .redirectErrorStream(true)
            .redirectOutput(log.toFile());
    Map<String, String> env = pb.environment();
    env.put("GPUMETER_URL", "http://127.0.0.1:" + server.port());
    env.put("KEY_A", adminA.plaintext());
    env.put("KEY_A_ID", Long.toString(adminA.keyId()));
    env.put("ACCOUNT_A", adminA.accountName());
    env.put("KEY_B", b1.plaintext());
    env.put("KEY_B_ID", Long.toString(b1.keyId()));
    env.put("ADMIN_TOKEN", TOKEN);
    env.put("REVOKE_KEY", revokeMe.plaintext());
    env.put("REVOKE_KEY_ID", Long.toString(revokeMe.keyId()));
    env.put("OUT_DIR", OUT.toString());
    env.put("CHROMIUM", chromium());
    Process p = pb.start();
    boolean exited = p.waitFor(400, TimeUnit.SECONDS);
    if (!exited) {
      p.destroyForcibly();
    }
    String output = Files.readString(log);
    System.out.println(output);
    assertThat(exited).as("the browser test finished within 400 s:\n" + output).isTrue();
    assertThat(p.exitValue()).as(output).isZero();
    assertThat(output).contains("console e2e: PASSED");
    assertThat(OUT.resolve("console-usage.png")).isNotEmptyFile();
    assertThat(OUT.resolve("console-operator-keys.png")).isNotEmptyFile();

    // The revocation in the operator view holds: the key is refused, the others still work.
    assertThat(client.get("/v1/models", revokeMe.plaintext()).status()).isEqualTo(401);
    assertThat(client.get("/v1/models", a1.plaintext()).status()).isEqualTo(200);
  }
}
