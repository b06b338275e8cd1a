package io.gpumeter.metering.cuda;

/** A CUDA event timer could not be opened (no driver, no device, a driver call failed). */
public class CudaTimerException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  public CudaTimerException(String message) {
    super(message);
  }

  public CudaTimerException(String message, Throwable cause) {
    super(message, cause);
  }
}
