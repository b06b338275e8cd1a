package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.billing.KeyScope;
import io.gpumeter.billing.pricing.DeviceClasses;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * The web console in a real browser: on the console tests' shared real server ({@link
 * ConsoleTestServer}), seeds real money data through the billing API (two EUR accounts, a price for
 * the model's device class, a plan with a small allowance, credits in both accounts), makes priced
 * completions with keys of two accounts, then runs {@code
 * server/src/main/console/e2e/console.e2e.mjs} with the machine's {@code node}: Playwright ({@code
 * playwright-core}) drives Debian's chromium ({@code /usr/bin/chromium}, or {@code $CHROMIUM})
 * headless, one browser for every check. The script checks every panel against the API the page
 * reads: the device-time and spend charts against {@code /v1/organization/usage/completions} and
 * {@code /v1/organization/costs} for the same range (three bucket widths and groupings), the
 * allowance and credit gauges against {@code /v1/organization/balance}, the invoice list and the
 * printable invoice against the invoice JSON, the request rows against {@code
 * /v1/organization/requests}, and the operator's accounts, prices and plans against the {@code
 * /admin/v1} lists; that account B's data is unreachable from A's session; keyboard navigation,
 * labels and text contrast; that a price set and a credit granted through the operator's forms (so
 * with the CSRF token) reach the API, and a POST without the token changes nothing; and that a key
 * revoked in the operator view gets 401. It saves screenshots under {@code target/console-e2e/}.
 * Its output is printed and kept in {@code target/console-e2e/output.log}; the test fails unless it
 * exits 0.
 */
@Timeout(600)
@ExtendWith(ConsoleTestServer.class)
class ConsoleBrowserTest {
  private static final String TOKEN = ConsoleTestServer.TOKEN;
  private static final Path OUT = Path.of("target", "console-e2e").toAbsolutePath();
  private static GpumeterServer server;

  @BeforeAll
  static void start() {
    server = ConsoleTestServer.server();
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

    long seeded = System.nanoTime();
    var keys = server.billing().apiKeys();
    var accounting = server.billing().accounting();
    // EUR, so the price below does not price ConsoleSessionTest's USD accounts on the shared server
    accounting.createAccount("browser-acme", "EUR", false);
    accounting.createAccount("browser-globex", "EUR", false);
    CreatedApiKey adminA = keys.create("browser-acme", KeyScope.ACCOUNT_ADMIN);
    CreatedApiKey a1 = keys.create("browser-acme");
    CreatedApiKey revokeMe = keys.create("browser-acme");
    CreatedApiKey b1 = keys.create("browser-globex");
    Client client = new Client(server.port());

    // Money: a price for the class of the device the demo model runs on (so every request below
    // has a cost), a plan whose allowance the first requests use up, and credits for the rest
    // (the budget admits a priced request only when the account can pay for it).
    Reply models = client.get("/v1/models", adminA.plaintext());
    assertThat(models.status()).as(models.toString()).isEqualTo(200);
    JsonNode model = models.json().at("/data/0");
    String deviceClass =
        DeviceClasses.of(model.at("/device").asText(), model.at("/device_name").asText());
    accounting.setPrice(
        "*", deviceClass, "EUR", 1_234_567L, Instant.now().minusSeconds(3_600), null);
    accounting.createPlan("browser-basic", 2_000_000L);
    accounting.assignPlan("browser-acme", "browser-basic", Instant.now().minusSeconds(60));
    accounting.grantCredit("browser-acme", "topup", 50_000_000L, null, "console browser test");
    accounting.grantCredit(
        "browser-acme",
        "grant",
        1_000_000L,
        Instant.now().plus(30, ChronoUnit.DAYS),
        "console browser test, expiring");
    accounting.grantCredit("browser-globex", "topup", 50_000_000L, null, "console browser test");

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
    System.out.printf(
        "console timing: shared server start %d ms, seeding and %d completions %d ms%n",
        ConsoleTestServer.startMillis(), callers.size(), (System.nanoTime() - seeded) / 1_000_000);

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
    env.put("ACCOUNT_B", b1.accountName());
    env.put("DEVICE_CLASS", deviceClass);
    long e2e = System.nanoTime();
    Process p = pb.start();
    boolean exited = p.waitFor(400, TimeUnit.SECONDS);
    if (!exited) {
      p.destroyForcibly();
    }
    String output = Files.readString(log);
    System.out.println(output);
    System.out.printf("console timing: node e2e %d ms%n", (System.nanoTime() - e2e) / 1_000_000);
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
