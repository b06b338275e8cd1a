/**
 * Checks for the lent GPU machine, run by tools/gpu-check/run.sh (see tools/gpu-check/README.md):
 * device provenance, DJL's PyTorch engine on CUDA, the CUDA event timer against PyTorch's own
 * {@code torch.cuda.Event} on the same workload, and the timer's overhead. Each prints {@code
 * RESULT key=value ...} lines that the script turns into its table.
 */
package io.gpumeter.benchmarks.gpu;
