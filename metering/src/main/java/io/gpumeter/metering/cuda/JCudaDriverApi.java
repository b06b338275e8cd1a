package io.gpumeter.metering.cuda;

import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUevent;
import jcuda.driver.CUstream;
import jcuda.driver.CUuuid;
import jcuda.driver.JCudaDriver;

/**
 * {@link DriverApi} on JCuda's {@link JCudaDriver}. The first use loads JCuda's native library (and
 * through it {@code libcuda.so.1}); callers probe with {@link CudaAvailability} first.
 *
 * <p>If some other code in the process turned on {@link JCudaDriver#setExceptionsEnabled}, these
 * calls throw {@link jcuda.CudaException} instead of returning an error code; {@link CudaStepTimer}
 * handles both.
 */
final class JCudaDriverApi implements DriverApi {
  static final JCudaDriverApi INSTANCE = new JCudaDriverApi();

  private JCudaDriverApi() {}

  @Override
  public int init() {
    return JCudaDriver.cuInit(0);
  }

  @Override
  public int deviceGet(CUdevice out, int ordinal) {
    return JCudaDriver.cuDeviceGet(out, ordinal);
  }

  @Override
  public int deviceGetName(byte[] name, CUdevice device) {
    return JCudaDriver.cuDeviceGetName(name, name.length, device);
  }

  @Override
  public int deviceGetUuid(CUuuid out, CUdevice device) {
    return JCudaDriver.cuDeviceGetUuid(out, device);
  }

  @Override
  public int driverGetVersion(int[] out) {
    return JCudaDriver.cuDriverGetVersion(out);
  }

  @Override
  public int primaryCtxRetain(CUcontext out, CUdevice device) {
    return JCudaDriver.cuDevicePrimaryCtxRetain(out, device);
  }

  @Override
  public int primaryCtxRelease(CUdevice device) {
    return JCudaDriver.cuDevicePrimaryCtxRelease(device);
  }

  @Override
  public int ctxSetCurrent(CUcontext context) {
    return JCudaDriver.cuCtxSetCurrent(context);
  }

  @Override
  public int eventCreate(CUevent out, int flags) {
    return JCudaDriver.cuEventCreate(out, flags);
  }

  @Override
  public int eventRecord(CUevent event, CUstream stream) {
    return JCudaDriver.cuEventRecord(event, stream);
  }

  @Override
  public int eventSynchronize(CUevent event) {
    return JCudaDriver.cuEventSynchronize(event);
  }

  @Override
  public int eventElapsedTime(float[] milliseconds, CUevent start, CUevent end) {
    return JCudaDriver.cuEventElapsedTime(milliseconds, start, end);
  }

  @Override
  public int eventDestroy(CUevent event) {
    return JCudaDriver.cuEventDestroy(event);
  }

  @Override
  public String errorName(int result) {
    return CudaFormat.resultName(result);
  }
}
