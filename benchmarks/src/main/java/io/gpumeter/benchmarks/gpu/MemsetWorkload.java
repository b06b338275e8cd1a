package io.gpumeter.benchmarks.gpu;

import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUresult;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

/**
 * Kernel-free device work through the driver API: {@code cuMemsetD8Async} over a buffer on the
 * legacy default stream, then a 4-byte {@code cuMemcpyDtoH}. torch_reference.py makes the same
 * driver calls through ctypes, so both sides time identical work. Needs the primary context current
 * on the calling thread (opening a {@link io.gpumeter.metering.cuda.CudaStepTimer} does that).
 */
final class MemsetWorkload implements Workload {
  private final long bytes;
  private final CUdeviceptr buffer = new CUdeviceptr();
  private final int[] host = new int[1];
  private final Pointer hostPointer = Pointer.to(host);
  private byte value;

  MemsetWorkload(long bytes) {
    this.bytes = bytes;
    check(JCudaDriver.cuMemAlloc(buffer, bytes), "cuMemAlloc(" + bytes + ")");
  }

  @Override
  public void step(int repeats) {
    for (int i = 0; i < repeats; i++) {
      check(
          JCudaDriver.cuMemsetD8Async(buffer, value++, bytes, (CUstream) null), "cuMemsetD8Async");
    }
    check(JCudaDriver.cuMemcpyDtoH(hostPointer, buffer, 4), "cuMemcpyDtoH");
  }

  @Override
  public String describe() {
    return "cuMemsetD8Async of " + (bytes >> 20) + " MiB";
  }

  @Override
  public void close() {
    JCudaDriver.cuMemFree(buffer);
  }

  static void check(int r, String call) {
    if (r != CUresult.CUDA_SUCCESS) {
      throw new IllegalStateException(call + " failed: " + CUresult.stringFor(r));
    }
  }
}
