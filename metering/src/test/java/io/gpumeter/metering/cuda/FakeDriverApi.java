package io.gpumeter.metering.cuda;

import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUevent;
import jcuda.driver.CUstream;
import jcuda.driver.CUuuid;

/**
 * A driver for machines without a GPU: keeps the state the real one would (retained contexts, the
 * context current per thread, live events and where they were recorded) and fails on request.
 */
final class FakeDriverApi implements DriverApi {
  static final int ILLEGAL_ADDRESS = 700;
  static final int INVALID_CONTEXT = 201;
  static final int INVALID_HANDLE = 400;

  final Map<CUevent, Integer> liveEvents = new IdentityHashMap<>();
  final List<Integer> createFlags = new ArrayList<>();
  final List<Long> recordedStreams = new ArrayList<>();
  final ThreadLocal<Boolean> currentOnThread = ThreadLocal.withInitial(() -> false);
  int retained;
  int released;
  int eventsCreated;
  int recordsWithoutCurrentContext;
  int initResult = CUDA_SUCCESS;

  /** Once set, every call after the next successful start record fails (a sticky error). */
  boolean breakAfterStart;

  boolean broken;

  /** A single call that fails once with this code (0: none). */
  int failNextEndRecord;

  int failEventCreateAfter = Integer.MAX_VALUE;
  float elapsedMs = 1.25f;
  boolean throwOnElapsed;

  @Override
  public int init() {
    return initResult;
  }

  @Override
  public int deviceGet(CUdevice out, int ordinal) {
    return ordinal == 0 ? CUDA_SUCCESS : 101; // CUDA_ERROR_INVALID_DEVICE
  }

  @Override
  public int deviceGetName(byte[] name, CUdevice device) {
    byte[] n = "Fake H100 80GB HBM3".getBytes(java.nio.charset.StandardCharsets.UTF_8);
    System.arraycopy(n, 0, name, 0, n.length);
    name[n.length] = 0;
    return CUDA_SUCCESS;
  }

  @Override
  public int deviceGetUuid(CUuuid out, CUdevice device) {
    for (int i = 0; i < 16; i++) {
      out.bytes[i] = (byte) (0xa0 + i);
    }
    return CUDA_SUCCESS;
  }

  @Override
  public int driverGetVersion(int[] out) {
    out[0] = 13000;
    return CUDA_SUCCESS;
  }

  @Override
  public int primaryCtxRetain(CUcontext out, CUdevice device) {
    retained++;
    return CUDA_SUCCESS;
  }

  @Override
  public int primaryCtxRelease(CUdevice device) {
    released++;
    return CUDA_SUCCESS;
  }

  @Override
  public int ctxSetCurrent(CUcontext context) {
    if (broken) {
      return ILLEGAL_ADDRESS;
    }
    currentOnThread.set(true);
    return CUDA_SUCCESS;
  }

  @Override
  public synchronized int eventCreate(CUevent out, int flags) {
    if (broken) {
      return ILLEGAL_ADDRESS;
    }
    if (eventsCreated >= failEventCreateAfter) {
      return 2; // CUDA_ERROR_OUT_OF_MEMORY
    }
    eventsCreated++;
    createFlags.add(flags);
    liveEvents.put(out, 0);
    return CUDA_SUCCESS;
  }

  @Override
  public synchronized int eventRecord(CUevent event, CUstream stream) {
    if (broken) {
      return ILLEGAL_ADDRESS;
    }
    if (!liveEvents.containsKey(event)) {
      return INVALID_HANDLE;
    }
    if (!currentOnThread.get()) {
      recordsWithoutCurrentContext++;
      return INVALID_CONTEXT;
    }
    recordedStreams.add(CudaStepTimer.handleOf(stream));
    int n = liveEvents.get(event) + 1;
    liveEvents.put(event, n);
    if (failNextEndRecord != 0 && recordedStreams.size() % 2 == 0) {
      int r = failNextEndRecord;
      failNextEndRecord = 0;
      return r;
    }
    if (breakAfterStart) {
      breakAfterStart = false;
      broken = true;
    }
    return CUDA_SUCCESS;
  }

  @Override
  public int eventSynchronize(CUevent event) {
    return broken ? ILLEGAL_ADDRESS : liveEvents.containsKey(event) ? CUDA_SUCCESS : INVALID_HANDLE;
  }

  @Override
  public int eventElapsedTime(float[] milliseconds, CUevent start, CUevent end) {
    if (throwOnElapsed) {
      throw new jcuda.CudaException("CUDA_ERROR_LAUNCH_FAILED");
    }
    if (broken) {
      return ILLEGAL_ADDRESS;
    }
    milliseconds[0] = elapsedMs;
    return CUDA_SUCCESS;
  }

  @Override
  public synchronized int eventDestroy(CUevent event) {
    liveEvents.remove(event);
    return broken ? ILLEGAL_ADDRESS : CUDA_SUCCESS;
  }

  @Override
  public String errorName(int result) {
    return "CUDA_ERROR_" + result;
  }
}
