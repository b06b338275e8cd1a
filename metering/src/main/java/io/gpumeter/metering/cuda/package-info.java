/**
 * Device timing on NVIDIA GPUs through JCuda's driver API.
 *
 * <p>{@link io.gpumeter.metering.cuda.CudaStepTimer} times model steps with CUDA events in the
 * device's primary context (the one libtorch's runtime uses), {@link
 * io.gpumeter.metering.cuda.CudaAvailability} probes whether that can work in this process. See
 * metering/README.md, "CUDA timer", for what an event span measures and how it is billed.
 */
package io.gpumeter.metering.cuda;
