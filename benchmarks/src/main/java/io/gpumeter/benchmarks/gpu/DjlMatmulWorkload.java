package io.gpumeter.benchmarks.gpu;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;

/**
 * {@code n x n} float32 matrix products through DJL's PyTorch engine on the GPU, then one element
 * copied to the host; torch_reference.py runs {@code torch.mm} on the same shapes.
 */
final class DjlMatmulWorkload implements Workload {
  private final int n;
  private final NDManager manager;
  private final NDArray a;
  private final NDArray b;

  DjlMatmulWorkload(int n, Device device) {
    this.n = n;
    this.manager = NDManager.newBaseManager(device, "PyTorch");
    this.a = manager.randomNormal(0f, 1f, new Shape(n, n), DataType.FLOAT32);
    this.b = manager.randomNormal(0f, 1f, new Shape(n, n), DataType.FLOAT32);
  }

  @Override
  public void step(int repeats) {
    try (NDManager step = manager.newSubManager()) {
      NDArray c = null;
      for (int i = 0; i < repeats; i++) {
        c = a.matMul(b);
        c.attach(step);
      }
      if (c != null) {
        c.getFloat(0, 0); // to the host: waits for the products
      }
    }
  }

  @Override
  public String describe() {
    return n + "x" + n + " float32 matmul (DJL)";
  }

  @Override
  public void close() {
    manager.close();
  }
}
