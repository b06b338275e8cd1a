package io.gpumeter.metering.cuda;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

class CudaAvailabilityTest {

  @Test
  void probeNeverThrowsAndSaysWhy() {
    CudaAvailability.Probe p = CudaAvailability.probe();
    System.out.println("CUDA availability on this machine: " + p);
    assertThat(p.reason()).isNotBlank();
    assertThat(CudaAvailability.isAvailable()).isEqualTo(p.available());
    assertThat(p.available()).isEqualTo(p.deviceCount() > 0);
    assertThat(CudaAvailability.probe()).isSameAs(p); // memoised
  }

  @Test
  void missingNativeLibraryIsAReasonNotACrash() {
    CudaAvailability.Probe p =
        CudaAvailability.run(
            () -> {
              throw new UnsatisfiedLinkError("libcuda.so.1: cannot open shared object file");
            });
    assertThat(p.available()).isFalse();
    assertThat(p.reason()).contains("did not load").contains("libcuda.so.1");
  }

  @Test
  void initFailureIsNamed() {
    CudaAvailability.Probe p = CudaAvailability.run(() -> calls(100, 0));
    assertThat(p.available()).isFalse();
    assertThat(p.reason()).isEqualTo("cuInit failed: E100");
  }

  @Test
  void noDevices() {
    CudaAvailability.Probe p = CudaAvailability.run(() -> calls(0, 0));
    assertThat(p.available()).isFalse();
    assertThat(p.reason()).contains("no CUDA device");
    assertThat(p.driverVersion()).isEqualTo("13.0");
  }

  @Test
  void devicesFound() {
    CudaAvailability.Probe p = CudaAvailability.run(() -> calls(0, 2));
    assertThat(p)
        .isEqualTo(
            new CudaAvailability.Probe(true, 2, "13.0", "2 CUDA device(s), driver API 13.0"));
  }

  private static CudaAvailability.Calls calls(int init, int devices) {
    return new CudaAvailability.Calls() {
      @Override
      public int init() {
        return init;
      }

      @Override
      public int deviceCount(int[] out) {
        out[0] = devices;
        return 0;
      }

      @Override
      public int driverVersion(int[] out) {
        out[0] = 13000;
        return 0;
      }

      @Override
      public String errorName(int result) {
        return "E" + result;
      }
    };
  }
}
