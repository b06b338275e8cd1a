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
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The Hugging Face exporter ({@code tools/export_hf.py}): its Python exactness suite, and an
 * exported random-weight Llama-shaped model served through {@link ModelStore} and {@link
 * DjlLanguageModel}, whose packed step logits must equal the Python reference's. Skipped, with the
 * reason printed, only when {@code /usr/bin/python3} cannot import torch.
 */
class HfExportTest {
  private static final String PYTHON = "/usr/bin/python3";
  private static final float TOLERANCE = 1e-4f;
  private static final long DEADLINE_SECONDS = 600;

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
          "HfExportTest skipped: "
              + PYTHON
              + " cannot import torch (apt-get install python3-torch; .ci/run does)";
      System.out.println(reason);
      Assumptions.abort(reason);
    }
  }

  /** Runs a python command in tools/ with a deadline; fails with its output unless it exits 0. */
  private String python(List<String> args) throws IOException, InterruptedException {
    Path log = tmp.resolve("python-" + System.nanoTime() + ".log");
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
    assertThat(finished)
        .as("%s did not finish in %d s; output:%n%s", cmd, DEADLINE_SECONDS, out)
        .isTrue();
    assertThat(p.exitValue()).as("%s failed; output:%n%s", cmd, out).isZero();
    return out;
  }

  @Test
  void pythonExactnessSuitePasses() throws IOException, InterruptedException {
    String out =
        python(List.of("-m", "unittest", "discover", "-v", "-s", "hf_export/tests", "-t", "."));
    System.out.println(out);
    assertThat(out).contains("OK").doesNotContain("skipped");
  }

  @Test
  void exportedLlamaStepsThroughDjlEqualThePythonReference()
      throws IOException, InterruptedException {
    python(List.of("-m", "hf_export.tests.java_fixture", tmp.toString()));
    JsonNode expected = new ObjectMapper().readTree(tmp.resolve("expected.json").toFile());
    String name = expected.get("model").asText();
    try (ModelStore store =
        ModelStore.open(tmp.resolve("models"), "cpu", StepTimerFactory.hostOnly())) {
      LanguageModel model = store.get(name).orElseThrow().model();
      int vocab = model.config().vocabSize();
      assertThat(model.config().kvHeads()).isEqualTo(2);
      float worst = 0;
      int rowsChecked = 0;
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
          for (int b = 0; b < step.size(); b++) {
            JsonNode want = step.get(b).get("expected");
            assertThat(want.size()).isEqualTo(vocab);
            for (int v = 0; v < vocab; v++) {
              worst = Math.max(worst, Math.abs(logits[b][v] - (float) want.get(v).asDouble()));
            }
            rowsChecked++;
          }
        }
      }
      System.out.printf(
          "HfExportTest: %s through DJL, %d logit rows, max |diff| vs reference %.2e%n",
          name, rowsChecked, worst);
      assertThat(rowsChecked).isEqualTo(3 * 65);
      assertThat(worst).isLessThan(TOLERANCE);
    }
  }
}
