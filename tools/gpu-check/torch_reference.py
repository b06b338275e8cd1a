#!/usr/bin/env python3
"""PyTorch's side of tools/gpu-check: the reference the JVM's CUDA event timer is compared with.

    torch_reference.py write-model --out DIR
        writes DIR/affine.pt (a scripted y = tanh(x @ W + b) @ V), DIR/input.bin and
        DIR/expected.bin (little-endian float32) for GpuCheck's "djl" check
    torch_reference.py time --workload memset --bytes B --repeats K --iters I --warmup W
    torch_reference.py time --workload matmul --n N --repeats K --iters I --warmup W
        times the same step shape as GpuCheck's "fidelity" check with torch.cuda.Event:
        start.record(); K units of work; a small result copied to the host; end.record();
        end.synchronize(); start.elapsed_time(end)

The memset workload makes the very driver calls the JVM makes through JCuda
(cuMemsetD8Async on the legacy default stream, then a 4-byte cuMemcpyDtoH_v2), here through
ctypes on a buffer that torch allocated, so both sides time identical device work. The matmul
workload is torch.mm on float32 n x n matrices, which DJL's NDArray.matMul calls in the same
libtorch.

Prints "RESULT check=torch_... key=value ..." lines, like GpuCheck.
"""

import argparse
import ctypes
import os
import statistics
import sys
import time


def result(check, **fields):
    print("RESULT check=" + check + " " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def stats(prefix, values_ms):
    s = sorted(values_ms)

    def at(q):
        return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]

    return {
        f"{prefix}_median_ms": f"{statistics.median(s):.4f}",
        f"{prefix}_p10_ms": f"{at(0.1):.4f}",
        f"{prefix}_p90_ms": f"{at(0.9):.4f}",
        f"{prefix}_min_ms": f"{s[0]:.4f}",
    }


def write_model(args):
    import torch

    class Affine(torch.nn.Module):
        def __init__(self, cols: int, hidden: int, out: int):
            super().__init__()
            g = torch.Generator().manual_seed(1234)
            self.w = torch.nn.Parameter(torch.randn(cols, hidden, generator=g) / cols ** 0.5)
            self.b = torch.nn.Parameter(torch.randn(hidden, generator=g) * 0.1)
            self.v = torch.nn.Parameter(torch.randn(hidden, out, generator=g) / hidden ** 0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x @ self.w + self.b) @ self.v

    os.makedirs(args.out, exist_ok=True)
    m = torch.jit.script(Affine(args.cols, args.hidden, args.outdim).eval())
    path = os.path.join(args.out, "affine.pt")
    m.save(path)
    g = torch.Generator().manual_seed(99)
    x = torch.randn(args.rows, args.cols, generator=g)
    with torch.no_grad():
        y = m(x)
    x.contiguous().numpy().astype("<f4").tofile(os.path.join(args.out, "input.bin"))
    y.contiguous().numpy().astype("<f4").tofile(os.path.join(args.out, "expected.bin"))
    print(f"wrote {path} (torch {torch.__version__}), input {tuple(x.shape)}, output {tuple(y.shape)}")
    result("torch_write_model", status="OK", rows=args.rows, cols=args.cols, out=args.outdim)


class Driver:
    """The few CUDA driver calls the memset workload needs, on the context torch uses."""

    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")
        self.lib.cuMemsetD8Async.argtypes = [ctypes.c_uint64, ctypes.c_ubyte, ctypes.c_size_t, ctypes.c_void_p]
        self.lib.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
        ctx = ctypes.c_void_p()
        self.check(self.lib.cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
        if not ctx.value:  # make the primary context (torch's) current on this thread
            dev = ctypes.c_int()
            self.check(self.lib.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
            self.check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
            self.check(self.lib.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")

    @staticmethod
    def check(r, call):
        if r != 0:
            raise RuntimeError(f"{call} failed: CUresult {r}")


def time_workload(args):
    import torch

    if not torch.cuda.is_available():
        result("torch_" + args.workload, status="FAIL", reason="torch.cuda.is_available()=False")
        sys.exit(1)
    torch.cuda.init()
    dev = torch.device("cuda:0")
    if args.workload == "memset":
        buf = torch.empty(args.bytes, dtype=torch.uint8, device=dev)
        torch.cuda.synchronize()
        drv = Driver()
        ptr = buf.data_ptr()
        host = ctypes.c_int32()
        stream = torch.cuda.current_stream().cuda_stream  # 0: the legacy default stream
        counter = [0]

        def step():
            for _ in range(args.repeats):
                counter[0] = (counter[0] + 1) & 0xFF
                drv.check(drv.lib.cuMemsetD8Async(ptr, counter[0], args.bytes, ctypes.c_void_p(stream)),
                          "cuMemsetD8Async")
            drv.check(drv.lib.cuMemcpyDtoH_v2(ctypes.byref(host), ptr, 4), "cuMemcpyDtoH_v2")

        what = f"cuMemsetD8Async of {args.bytes >> 20} MiB (ctypes, stream {stream})"
    else:
        g = torch.Generator(device=dev).manual_seed(0)
        a = torch.randn(args.n, args.n, device=dev, generator=g)
        b = torch.randn(args.n, args.n, device=dev, generator=g)

        def step():
            c = None
            for _ in range(args.repeats):
                c = torch.mm(a, b)
            c[0, 0].item()

        what = f"{args.n}x{args.n} float32 torch.mm (allow_tf32={torch.backends.cuda.matmul.allow_tf32})"

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(args.warmup):
        start.record()
        step()
        end.record()
        end.synchronize()
    event_ms, host_ms = [], []
    for _ in range(args.iters):
        h = time.perf_counter_ns()
        start.record()
        step()
        end.record()
        end.synchronize()
        host_ms.append((time.perf_counter_ns() - h) / 1e6)
        event_ms.append(start.elapsed_time(end))
    e = stats("event", event_ms)
    print(f"{args.repeats} x {what} per step, {args.iters} steps: torch.cuda.Event median {e['event_median_ms']} ms;"
          f" host median {statistics.median(host_ms):.4f} ms; {torch.cuda.get_device_name(0)},"
          f" torch {torch.__version__}, CUDA {torch.version.cuda}")
    result("torch_" + args.workload, status="OK", workload=args.workload, repeats=args.repeats, iters=args.iters,
           **e, **stats("host", host_ms))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write-model")
    w.add_argument("--out", required=True)
    w.add_argument("--rows", type=int, default=8)
    w.add_argument("--cols", type=int, default=64)
    w.add_argument("--hidden", type=int, default=128)
    w.add_argument("--outdim", type=int, default=32)
    t = sub.add_parser("time")
    t.add_argument("--workload", choices=["memset", "matmul"], required=True)
    t.add_argument("--bytes", type=int, default=1 << 30)
    t.add_argument("--n", type=int, default=4096)
    t.add_argument("--repeats", type=int, default=8)
    t.add_argument("--iters", type=int, default=50)
    t.add_argument("--warmup", type=int, default=10)
    args = p.parse_args()
    if args.cmd == "write-model":
        write_model(args)
    else:
        time_workload(args)


if __name__ == "__main__":
    main()
