package io.gpumeter.metering.cuda;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CudaFormatTest {

  @Test
  void driverVersions() {
    assertThat(CudaFormat.version(13000)).isEqualTo("13.0");
    assertThat(CudaFormat.version(12060)).isEqualTo("12.6");
    assertThat(CudaFormat.version(12080)).isEqualTo("12.8");
    assertThat(CudaFormat.version(11080)).isEqualTo("11.8");
    assertThat(CudaFormat.version(0)).isEmpty();
  }

  @Test
  void uuidLikeNvidiaSmi() {
    byte[] b = new byte[16];
    for (int i = 0; i < 16; i++) {
      b[i] = (byte) (i * 17);
    }
    assertThat(CudaFormat.gpuUuid(b)).isEqualTo("GPU-00112233-4455-6677-8899-aabbccddeeff");
    assertThat(CudaFormat.gpuUuid(new byte[3])).isEmpty();
  }

  @Test
  void deviceNameStopsAtNul() {
    byte[] b = new byte[16];
    byte[] n = "NVIDIA H200".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    System.arraycopy(n, 0, b, 0, n.length);
    assertThat(CudaFormat.cString(b)).isEqualTo("NVIDIA H200");
  }

  @Test
  void runtimeVersionFromTheMappedCudart(@TempDir Path dir) throws Exception {
    assertThat(CudaFormat.cudartVersion("/x/nvidia/cu13/lib/libcudart.so.13")).isEqualTo("13");
    assertThat(CudaFormat.cudartVersion("/usr/local/cuda/lib64/libcudart.so.12.8.90"))
        .isEqualTo("12.8");
    assertThat(
            CudaFormat.cudartVersion("/root/.djl.ai/pytorch/2.7.1-cu128/libcudart-218eec4c.so.12"))
        .isEqualTo("12");
    assertThat(CudaFormat.cudartVersion("/usr/lib/libc.so.6")).isEmpty();
    Path maps = dir.resolve("maps");
    Files.writeString(
        maps,
        "7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/libc.so.6\n"
            + "7f02-7f03 r-xp 00000000 08:01 2 /opt/torch/lib/python3.12/site-packages/nvidia/cu13/lib/libcudart.so.13\n");
    assertThat(CudaFormat.mappedCudart(maps)).isEqualTo("13");
    assertThat(CudaFormat.mappedCudart(dir.resolve("absent"))).isEmpty();
  }

  @Test
  void runtimeVersionFromTheFlavor() {
    assertThat(CudaFormat.fromFlavor("cu128")).isEqualTo("12.8");
    assertThat(CudaFormat.fromFlavor("cu130")).isEqualTo("13.0");
    assertThat(CudaFormat.fromFlavor("cu118-precxx11")).isEqualTo("11.8");
    assertThat(CudaFormat.fromFlavor("cpu")).isEmpty();
    assertThat(CudaFormat.fromFlavor(null)).isEmpty();
  }
}
