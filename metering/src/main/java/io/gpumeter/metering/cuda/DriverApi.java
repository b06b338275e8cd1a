package io.gpumeter.metering.cuda;

import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUevent;
import jcuda.driver.CUstream;
import jcuda.driver.CUuuid;

/**
 * The CUDA driver calls {@link CudaStepTimer} makes, each returning a {@code CUresult} code (0 is
 * success). Production uses {@link JCudaDriverApi}; tests on machines without a GPU use a fake
 * behind the same interface.
 */
interface DriverApi {
  int CUDA_SUCCESS = 0;

  int init();

  int deviceGet(CUdevice out, int ordinal);

  int deviceGetName(byte[] name, CUdevice device);

  int deviceGetUuid(CUuuid out, CUdevice device);

  int driverGetVersion(int[] out);

  int primaryCtxRetain(CUcontext out, CUdevice device);

  int primaryCtxRelease(CUdevice device);

  int ctxSetCurrent(CUcontext context);

  int eventCreate(CUevent out, int flags);

  int eventRecord(CUevent event, CUstream stream);

  int eventSynchronize(CUevent event);

  int eventElapsedTime(float[] milliseconds, CUevent start, CUevent end);

  int eventDestroy(CUevent event);

  /** Symbolic name of a {@code CUresult}, for messages. */
  String errorName(int result);
}
