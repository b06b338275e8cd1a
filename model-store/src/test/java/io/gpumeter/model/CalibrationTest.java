package io.gpumeter.model;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import io.gpumeter.metering.CalibratedWeightPolicy;
import io.gpumeter.metering.HostStepTimer;
import io.gpumeter.metering.LinearWeightPolicy;
import io.gpumeter.metering.TimerInfo;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CalibrationTest {
  @TempDir Path tmp;

  private static List<Calibration.Measured> synthetic(
      double a, double p, double d, double c, double noise) {
    return synthetic(a, p, d, c, 0, noise);
  }

  /**
   * Points whose times follow {@code a + p·P + d·D + c·ΣL + q·Σ(tokens×L)} exactly, plus optional
   * noise (each sample off by up to ±noise of it, uniformly).
   */
  private static List<Calibration.Measured> synthetic(
      double a, double p, double d, double c, double q, double noise) {
    SplittableRandom rnd = new SplittableRandom(5);
    List<Calibration.Measured> out = new ArrayList<>();
    for (StepShape s : Calibration.design(1024)) {
      double t =
          a
              + p * s.prefillTokens()
              + d * s.decodes()
              + c * s.contextSum()
              + q * s.tokenContextSum();
      long[] samples = new long[3];
      for (int i = 0; i < samples.length; i++) {
        samples[i] = Math.round(t * (1 + noise * (rnd.nextDouble() * 2 - 1)));
      }
      out.add(new Calibration.Measured(s, samples));
    }
    return out;
  }

  @Test
  void theFitRecoversKnownCoefficientsAndItsPolicyIsInPicoseconds() {
    Calibration.Fit fit = Calibration.fit(synthetic(1_500_000, 8_000, 50_000, 40, 0));
    assertThat(fit.interceptNs()).isCloseTo(1_500_000, within(1.0));
    assertThat(fit.prefillPerTokenNs()).isCloseTo(8_000, within(0.01));
    assertThat(fit.decodePerSequenceNs()).isCloseTo(50_000, within(0.01));
    assertThat(fit.contextPerTokenNs()).isCloseTo(40, within(0.001));
    assertThat(fit.tokenContextNs()).isCloseTo(0, within(1e-6));
    assertThat(fit.r2()).isCloseTo(1.0, within(1e-9));
    assertThat(fit.policy()).isEqualTo(new LinearWeightPolicy(8_000_000, 50_000_000, 40_000));
    assertThat(fit.report()).contains("R^2 = 1.0000").contains("resid_%");
  }

  @Test
  void theTokensTimesContextTermIsRecoveredFromStepsGeneratedByAKnownPolicy() {
    // A known policy, in picoseconds, and step times it generates: T = a + Σ weights / 1000.
    LinearWeightPolicy known = new LinearWeightPolicy(6_000_000, 45_000_000, 30_000, 2_500);
    double a = 1_200_000;
    Calibration.Fit exact = Calibration.fit(synthetic(a, 6_000, 45_000, 30, 2.5, 0));
    assertThat(exact.tokenContextNs()).isCloseTo(2.5, within(1e-6));
    assertThat(exact.contextPerTokenNs()).isCloseTo(30, within(1e-5));
    assertThat(exact.interceptNs()).isCloseTo(a, within(1.0));
    assertThat(exact.policy()).isEqualTo(known);
    for (StepShape s : Calibration.design(1024)) {
      long sumW = 0;
      for (StepShape.Member m : s.members()) {
        sumW += known.weight(m.prefill(), m.tokens(), m.context());
      }
      assertThat(exact.predictNs(s)).isCloseTo(a + sumW / 1000.0, within(1.0));
    }
    // With ±3% noise on every sample each slope is still recovered within 10%, and R² stays high.
    Calibration.Fit noisy = Calibration.fit(synthetic(a, 6_000, 45_000, 30, 2.5, 0.03));
    assertThat(noisy.tokenContextNs()).isCloseTo(2.5, within(0.25));
    assertThat(noisy.prefillPerTokenNs()).isCloseTo(6_000, within(600.0));
    assertThat(noisy.decodePerSequenceNs()).isCloseTo(45_000, within(4_500.0));
    assertThat(noisy.r2()).isGreaterThan(0.99);
    assertThat(exact.report()).contains("ns/(token x position)");
  }

  @Test
  void noiseLowersRSquaredAndANegativeSlopeIsFixedAtZero() {
    Calibration.Fit noisy = Calibration.fit(synthetic(1_000_000, 5_000, 30_000, 20, 0.05));
    assertThat(noisy.r2()).isLessThan(1.0).isGreaterThan(0.5);
    assertThat(noisy.residualsNs()).hasSize(noisy.points().size());
    // Time falls with context: the context weight cannot be negative, so it is 0 and refitted.
    Calibration.Fit clamped = Calibration.fit(synthetic(1_000_000, 5_000, 30_000, -20, 0));
    assertThat(clamped.contextPerTokenNs()).isZero();
    assertThat(clamped.policy().contextPerToken()).isZero();
    assertThatThrownBy(() -> Calibration.fit(synthetic(1, 0, 0, 0, 0).subList(0, 3)))
        .isInstanceOf(IllegalArgumentException.class);
  }

  @Test
  void designedStepsRunOnTheRealModelAndEveryRepeatIsMeasured() {
    LanguageModel model = TestModels.store().models().get(0).model();
    List<StepShape> shapes = List.of(Calibration.shape(32, 4, 600), Calibration.shape(0, 16, 64));
    List<Calibration.Measured> m = Calibration.measure(model, HostStepTimer.cpu(), shapes, 3, 1);
    assertThat(m).hasSize(2);
    for (Calibration.Measured x : m) {
      assertThat(x.samplesNs()).hasSize(3);
      assertThat(java.util.Arrays.stream(x.samplesNs()).min().getAsLong()).isPositive();
    }
    assertThat(shapes.get(0).contextSum()).isEqualTo(4 * 600 + 600);
    assertThat(shapes.get(0).without(0).decodes()).isEqualTo(3);
  }

  @Test
  void weightsFileIsVersionedAndReadBackAsTheSamePolicy() throws Exception {
    Calibration.Fit fit = Calibration.fit(synthetic(1_500_000, 8_000, 50_000, 40, 0));
    TimerInfo cpu = TimerInfo.cpu("test cpu");
    Instant t1 = Instant.parse("2026-11-30T17:40:12.345Z");
    CalibratedWeightPolicy v1 = WeightsFile.write(tmp, "m", cpu, fit, 7, t1);
    CalibratedWeightPolicy v2 = WeightsFile.write(tmp, "m", cpu, fit, 7, t1.plusSeconds(60));
    assertThat(v1.version()).isEqualTo(1);
    assertThat(v2.version()).isEqualTo(2);
    WeightsFile.Calibrated read = WeightsFile.read(tmp).orElseThrow();
    assertThat(read.policy()).isEqualTo(v2);
    assertThat(read.device()).isEqualTo("cpu");
    assertThat(read.policy().describe())
        .isEqualTo("calibrated(v=2,2026-11-30T17:41:12Z):linear(p=8000000,d=50000000,c=40000)");
    assertThat(read.policy().weight(true, 10, 100)).isEqualTo(10 * 8_000_000L + 100 * 40_000L);
    String json = Files.readString(tmp.resolve(WeightsFile.FILE_NAME));
    assertThat(json)
        .contains("\"fixedCost\" : \"by-weight\"")
        .contains("\"r2\"")
        .contains("\"format\" : 2")
        .contains("\"tokenContext\" : 0");

    // A format-1 file, written before the tokens×context term, is read as a policy without it.
    String v1json =
        json.replace("\"format\" : 2", "\"format\" : 1").replace("\"tokenContext\" : 0,", "");
    assertThat(v1json).doesNotContain("tokenContext");
    Files.writeString(tmp.resolve(WeightsFile.FILE_NAME), v1json);
    assertThat(WeightsFile.read(tmp).orElseThrow().policy().linear())
        .isEqualTo(new LinearWeightPolicy(8_000_000, 50_000_000, 40_000, 0));
    Files.writeString(
        tmp.resolve(WeightsFile.FILE_NAME), json.replace("\"format\" : 2", "\"format\" : 3"));
    assertThatThrownBy(() -> WeightsFile.read(tmp))
        .isInstanceOf(ModelException.class)
        .hasMessageContaining("format 3");
    Files.writeString(
        tmp.resolve(WeightsFile.FILE_NAME), json.replace("\"tokenContext\" : 0,", ""));
    assertThatThrownBy(() -> WeightsFile.read(tmp))
        .isInstanceOf(ModelException.class)
        .hasMessageContaining("tokenContext");

    assertThat(WeightsFile.read(tmp.resolve("nowhere"))).isEmpty();
    Files.writeString(tmp.resolve(WeightsFile.FILE_NAME), json.replace("8000000", "-8"));
    assertThatThrownBy(() -> WeightsFile.read(tmp))
        .isInstanceOf(ModelException.class)
        .hasMessageContaining("weights.json")
        .hasMessageContaining("must be >= 0");
  }
}
