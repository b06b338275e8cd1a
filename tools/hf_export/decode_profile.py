"""Decode cost against context in python, without the JVM: loads an exported ``model.pt`` (any
model directory of the model contract) with ``torch.jit.load``, one intra-op thread, TorchScript's
graph optimiser off (as DjlLanguageModel runs it), and for each context length prefills that many
tokens in chunks of 128, then times 32 single-token decode steps at batch 1 by the thread's CPU
time (so time spent waiting for a core on a shared machine is left out). Rounds alternate the
contexts; prints each context's median ms/token, p10/p90 and its ratio to the first context.

    /usr/bin/python3 -m hf_export.decode_profile MODEL_DIR [--contexts 32,512,2000] [--rounds 3]
        [--profile CONTEXT]      (from tools/; --profile: torch's per-operator table at CONTEXT)

Debian's torch 1.13 links the reference BLAS: with ``LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/
openblas-pthread OPENBLAS_NUM_THREADS=1`` it uses OpenBLAS, closer to the MKL of DJL's libtorch.
Figures from here are hints; ContextDecode (benchmarks) measures what the server runs.
"""

import argparse
import json
import os
import statistics
import time

import torch


def decode_times(m, cfg: dict, context: int, steps: int = 32):
    shape = [cfg["layers"], 1, cfg["contextLength"], cfg["kvHeads"], cfg["headDim"]]
    kc, vc = torch.zeros(shape), torch.zeros(shape)
    vocab = min(cfg["vocabSize"], 256)
    out = []
    with torch.no_grad():
        for at in range(0, context, 128):
            n = min(128, context - at)
            m.step(torch.arange(at, at + n) % vocab, torch.zeros(n, dtype=torch.long),
                   torch.arange(at, at + n), torch.tensor([n - 1]), kc, vc)
        for t in range(steps):
            p = context + t
            s = time.thread_time_ns()
            m.step(torch.tensor([p % vocab]), torch.tensor([0]), torch.tensor([p]),
                   torch.tensor([0]), kc, vc)
            out.append(time.thread_time_ns() - s)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--contexts", default="32,512,2000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch._C._set_graph_executor_optimize(False)
    with open(os.path.join(args.model_dir, "model.json")) as f:
        cfg = json.load(f)
    m = torch.jit.load(os.path.join(args.model_dir, cfg["file"]))
    contexts = [int(c) for c in args.contexts.split(",")
                if int(c) + 32 < cfg["contextLength"]]
    if args.profile:
        decode_times(m, cfg, args.profile, 4)
        with torch.autograd.profiler.profile() as prof:
            decode_times(m, cfg, args.profile, 16)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        return
    res = {c: [] for c in contexts}
    for r in range(args.rounds + 1):  # round 0 warms up
        for c in contexts:
            ts = decode_times(m, cfg, c)
            if r > 0:
                res[c] += ts
    base = None
    for c in contexts:
        v = sorted(res[c])
        med = statistics.median(v)
        base = base or med
        print(f"{cfg['name']} context {c}: CPU ms/token median {med / 1e6:.3f}"
              f" (p10 {v[len(v) // 10] / 1e6:.3f}, p90 {v[9 * len(v) // 10] / 1e6:.3f})"
              f" ratio {med / base:.2f}")


if __name__ == "__main__":
    main()
