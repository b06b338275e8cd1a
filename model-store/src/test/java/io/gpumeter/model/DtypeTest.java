package io.gpumeter.model;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.gpumeter.metering.StepTimerFactory;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Models exported in 2-byte dtypes ({@code model.json} {@code dtype} {@code bfloat16} and {@code
 * float16}) through {@link ModelStore} and DJL on the CPU: one random Llama-shaped checkpoint
 * exported by {@code tools/export_hf.py} in float32, bfloat16 and float16 ({@code
 * hf_export/tests/dtype_fixture.py}). float32 and float16 are served, with float16 KV caches of
 * half the bytes, and the packed steps of the scenario give logits within 1e-4 (float32) and 0.1
 * (float16) of the float64 reference; bfloat16 is refused with the reason (DJL's JNI aborts the
 * process on bfloat16 tensors) while the others load. Skipped, with the reason printed, only when
 * {@code /usr/bin/python3} cannot import torch.
 */
class DtypeTest {
  private static final String PYTHON = "/usr/bin/python3";
  private static final long DEADLINE_SECONDS = 600;
  private static final double FLOAT16_TOLERANCE = 0.1;

  private static Path tools;

  @TempDir Path tmp;

  @BeforeAll
  static void needsTorch() throws IOException, InterruptedException {
    tools = TestModels.modelsDir().getParent().resolve("tools");
    Process p =
        new ProcessBuilder(PYTHON, "-c", "import torch")
            .redirectErrorStream(true)
            .redirectOutput(ProcessBuilder.Redirect.DISCARD)
            .start();
    boolean ok = p.waitFor(120, TimeUnit.SECONDS) && p.exitValue() == 0;
    if (!ok) {
      p.destroyForcibly();
      String reason =
          "DtypeTest skipped: "
              + PYTHON
              + " cannot import torch (apt-get install python3-torch; .ci/run does)";
      System.out.println(reason);
      Assumptions.abort(reason);
    }
  }

  private void python(List<String> args) throws IOException, InterruptedException {
    Path log = tmp.resolve("python.log");
    List<String> cmd = new ArrayList<>();
    cmd.add(PYTHON);
    cmd.addAll(args);
    Process p =
        new ProcessBuilder(cmd)
            .directory(tools.toFile())
            .redirectErrorStream(true)
            .redirectOutput(log.toFile())
            .start();
    boolean finished = p.waitFor(DEADLINE_SECONDS, TimeUnit.SECONDS);
    if (!finished) {
      p.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
    }
    String out = Files.readString(log, StandardCharsets.UTF_8);
    assertThat(finished).as("%s did not finish; output:%n%s", cmd, out).isTrue();
    assertThat(p.exitValue()).as("%s failed; output:%n%s", cmd, out).isZero();
    System.out.print(out);
  }

  /** Worst |logit - reference| and |logit - python's logit| over the scenario's rows. */
  private record Diffs(double toReference, double toPython, int rows) {}

  private static Diffs run(LanguageModel model, JsonNode expected, JsonNode python) {
    int vocab = model.config().vocabSize();
    double toReference = 0;
    double toPython = 0;
    int row = 0;
    try (KvCache cache = model.newCache(expected.get("slots").asInt())) {
      for (JsonNode step : expected.get("steps")) {
        int tokens = 0;
        for (JsonNode seq : step) {
          tokens += seq.get("tokens").size();
        }
        StepBatch batch = new StepBatch(tokens, step.size());
        for (JsonNode seq : step) {
          int[] ids = new int[seq.get("tokens").size()];
          for (int i = 0; i < ids.length; i++) {
            ids[i] = seq.get("tokens").get(i).asInt();
          }
          batch.addSequence(
              seq.get("slot").asInt(), ids, 0, ids.length, seq.get("position").asInt());
        }
        float[][] logits = new float[step.size()][vocab];
        model.step(batch, cache, logits);
        for (int b = 0; b < step.size(); b++, row++) {
          JsonNode want = step.get(b).get("expected");
          JsonNode py = python == null ? null : python.get("logits").get(row);
          for (int v = 0; v < vocab; v++) {
            toReference = Math.max(toReference, Math.abs(logits[b][v] - want.get(v).asDouble()));
            if (py != null) {
              toPython = Math.max(toPython, Math.abs(logits[b][v] - py.get(v).asDouble()));
            }
          }
        }
      }
    }
    return new Diffs(toReference, toPython, row);
  }

  @Test
  void float16ServesThroughDjlAndBfloat16IsRefusedWithTheReason()
      throws IOException, InterruptedException {
    python(List.of("-m", "hf_export.tests.dtype_fixture", tmp.toString()));
    JsonNode expected = new ObjectMapper().readTree(tmp.resolve("expected.json").toFile());
    JsonNode names = expected.get("models");
    try (ModelStore store =
        ModelStore.openEach(tmp.resolve("models"), "cpu", StepTimerFactory.hostOnly())) {
      Map<Path, String> failures = store.failures();
      // bfloat16: refused before DJL touches a bfloat16 tensor, the others still served
      Path bf16Dir = tmp.resolve("models").resolve(names.get("bfloat16").asText());
      assertThat(failures).containsOnlyKeys(bf16Dir);
      assertThat(failures.get(bf16Dir))
          .contains("dtype bfloat16 is refused")
          .contains("export the model in float16");
      assertThat(store.get(names.get("bfloat16").asText())).isEmpty();

      LanguageModel f32 = store.get(names.get("float32").asText()).orElseThrow().model();
      LanguageModel f16 = store.get(names.get("float16").asText()).orElseThrow().model();
      assertThat(f16.config().dtype()).isEqualTo("float16");
      try (KvCache a = f32.newCache(2);
          KvCache b = f16.newCache(2)) {
        assertThat(b.bytes() * 2).isEqualTo(a.bytes());
      }
      assertThat(((DjlLanguageModel) f16).bytesPerSlot())
          .isEqualTo(KvFootprint.bytesPerToken(f16.config()) * f16.config().contextLength());

      Diffs d32 = run(f32, expected, expected.get("python").get("float32"));
      Diffs d16 = run(f16, expected, null); // python 1.13's CPU torch cannot run float16
      System.out.printf(
          "DtypeTest: %d rows; float32 vs reference %.2e, vs python %.2e; float16 vs reference"
              + " %.4f%n",
          d32.rows(), d32.toReference(), d32.toPython(), d16.toReference());
      assertThat(d32.rows()).isEqualTo(3 * 65);
      assertThat(d32.toReference()).isLessThan(1e-4);
      assertThat(d32.toPython()).isLessThan(1e-4);
      // float16 keeps 11 significant bits: logits of magnitude ~5 within a few hundredths
      assertThat(d16.rows()).isEqualTo(3 * 65);
      assertThat(d16.toReference()).isGreaterThan(0).isLessThan(FLOAT16_TOLERANCE);
    }
  }
}
