package io.gpumeter.server;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.gpumeter.batching.StepListener;
import io.gpumeter.billing.CreatedApiKey;
import io.gpumeter.metering.UsageRecord;
import io.gpumeter.server.TestServers.Client;
import io.gpumeter.server.TestServers.Reply;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * {@code usage} beside a running server (issue 18, item 3): after real completions, the command's
 * table carries the same requests, device time and KV memory-time as {@code GET /v1/usage} and as
 * the stored records; bad arguments exit 2 and print nothing.
 */
@Timeout(600)
class UsageCommandTest {
  private static GpumeterServer server;
  private static Client client;
  private static Path config;

  @BeforeAll
  static void start() throws Exception {
    server = GpumeterServer.start(TestServers.config("usage-cli").build(), StepListener.NONE);
    client = new Client(server.port());
    config = server.config().dataDir().resolve("gpumeter.properties");
    Files.writeString(
        config,
        "data.dir="
            + server.config().dataDir()
            + "\ndb.binary_cache_dir="
            + TestServers.binaryCache()
            + "\n");
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  @Test
  void theUsageTableShowsKvMemoryTimeAsTheUsageApiAndTheRecordsDo() throws Exception {
    Instant from = Instant.now().minus(Duration.ofMinutes(1));
    CreatedApiKey key = server.billing().apiKeys().create("usage-cli");
    List<String> ids = new ArrayList<>();
    for (String prompt : List.of("Once upon a time", "A much longer prompt, to hold more cache")) {
      Reply r =
          client.post(
              "/v1/completions",
              key.plaintext(),
              "{\"model\":\"demo-byte-lm\",\"prompt\":\"" + prompt + "\",\"max_tokens\":12}");
      assertThat(r.status()).as(r.toString()).isEqualTo(200);
      ids.add(r.json().get("id").asText());
    }
    long kv = 0;
    long peak = 0;
    for (String id : ids) {
      UsageRecord rec = server.billing().usage().find(id).orElseThrow().record();
      kv += rec.kvByteNs();
      peak = Math.max(peak, rec.peakKvBytes());
    }
    assertThat(kv).isPositive();
    Instant to = Instant.now().plus(Duration.ofMinutes(1));

    Reply api = client.get("/v1/usage?start=" + from + "&end=" + to, key.plaintext());
    assertThat(api.status()).as(api.toString()).isEqualTo(200);
    JsonNode totals = api.json().get("totals");
    assertThat(totals.get("kv_byte_ns").asLong()).isEqualTo(kv);
    assertThat(totals.get("peak_kv_bytes").asLong()).isEqualTo(peak);

    Cli cli =
        cli(
            "usage",
            "--key",
            Long.toString(key.keyId()),
            "--from",
            from.toString(),
            "--to",
            "" + to);
    assertThat(cli.status()).as(cli.toString()).isZero();
    String[] lines = cli.out().split("\n");
    assertThat(lines[0]).isEqualTo(UsageCommand.HEADER);
    List<String> header = List.of(UsageCommand.HEADER.split("\t"));
    String[] total = lines[lines.length - 1].split("\t");
    assertThat(total[0]).isEqualTo("TOTAL");
    assertThat(total[header.indexOf("REQUESTS")]).isEqualTo("2");
    assertThat(total[header.indexOf("DEVICE_NS")]).isEqualTo(totals.get("device_time_ns").asText());
    assertThat(total[header.indexOf("KV_BYTE_NS")]).isEqualTo(Long.toString(kv));
    assertThat(total[header.indexOf("PEAK_KV_BYTES")]).isEqualTo(Long.toString(peak));
    // one row per hour and model in between, whose KV figures add up to the total
    long rowsKv = 0;
    for (int i = 1; i < lines.length - 1; i++) {
      String[] cells = lines[i].split("\t");
      assertThat(cells[1]).isEqualTo("demo-byte-lm");
      rowsKv += Long.parseLong(cells[header.indexOf("KV_BYTE_NS")]);
    }
    assertThat(lines.length).isBetween(3, 4); // the two requests may straddle an hour
    assertThat(rowsKv).isEqualTo(kv);

    Cli backwards =
        cli(
            "usage",
            "--key",
            Long.toString(key.keyId()),
            "--from",
            to.toString(),
            "--to",
            "" + from);
    assertThat(backwards.status()).isEqualTo(2);
    assertThat(backwards.out()).isEmpty();
    assertThat(backwards.err()).contains("--to");
    assertThat(cli("usage", "--key", "0").status()).isEqualTo(2);
  }

  record Cli(int status, String out, String err) {}

  private static Cli cli(String... args) throws Exception {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    String[] all = new String[args.length + 2];
    System.arraycopy(args, 0, all, 0, args.length);
    all[args.length] = "--config";
    all[args.length + 1] = config.toString();
    int status =
        Main.run(
            all,
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8));
    return new Cli(
        status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }
}
