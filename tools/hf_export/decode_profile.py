"""Decode cost against context in python, without the JVM: loads an exported ``model.pt`` (any
model directory of the model contract) with ``torch.jit.load``, one intra-op thread, TorchScript's
graph optimiser off (as DjlLanguageModel runs it), and for each context length prefills that many
tokens in chunks of 128, then times 32 single-token decode steps at batch 1 by the thread's CPU
time (so time spent waiting for a core on a shared machine is left out). Rounds alternate the
contexts; prints each context's median ms/token, p10/p90 and its ratio to the first context.

    /usr/bin/python3 -m hf_export.decode_profile MODEL_DIR [--contexts 32,512,2000] [--rounds 3]
        [--profile]      (from tools/; --profile: torch's per-operator self time per decode
                          step at each context, side by side, prefill left out)

Debian's torch 1.13 links the reference BLAS: with ``LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/
openblas-pthread OPENBLAS_NUM_THREADS=1`` it uses OpenBLAS, closer to the MKL of DJL's libtorch.
Figures from here are hints; ContextDecode (benchmarks) measures what the server runs, and
StepProfile (benchmarks) gives the per-operator table of the libtorch 2.7.1 + MKL that it runs.
"""

import argparse
import json
import os
import statistics
import time

import torch


def decode_times(m, cfg: dict, context: int, steps: int = 32, profile: list = None):
    """Prefills context tokens, then times steps decode steps; with profile (a list), the decode
    steps after the first 4 run under torch's profiler, whose averages are appended to it."""
    shape = [cfg["layers"], 1, cfg["contextLength"], cfg["kvHeads"], cfg["headDim"]]
    kc, vc = torch.zeros(shape), torch.zeros(shape)
    vocab = min(cfg["vocabSize"], 256)
    out = []
    with torch.no_grad():
        for at in range(0, context, 128):
            n = min(128, context - at)
            m.step(torch.arange(at, at + n) % vocab, torch.zeros(n, dtype=torch.long),
                   torch.arange(at, at + n), torch.tensor([n - 1]), kc, vc)
        if profile is not None:
            for t in range(4):
                p = context + t
                m.step(torch.tensor([p % vocab]), torch.tensor([0]), torch.tensor([p]),
                       torch.tensor([0]), kc, vc)
            with torch.autograd.profiler.profile() as prof:
                for t in range(4, steps):
                    p = context + t
                    m.step(torch.tensor([p % vocab]), torch.tensor([0]), torch.tensor([p]),
                           torch.tensor([0]), kc, vc)
            profile.append(prof.key_averages())
            return out
        for t in range(steps):
            p = context + t
            s = time.thread_time_ns()
            m.step(torch.tensor([p % vocab]), torch.tensor([0]), torch.tensor([p]),
                   torch.tensor([0]), kc, vc)
            out.append(time.thread_time_ns() - s)
    return out


def profile_table(m, cfg: dict, contexts, rounds: int, steps: int = 20) -> None:
    """Per operator: self CPU µs per decode step at each context, the minimum over rounds (each
    round profiles steps - 4 decode steps per context; torch's profiler times by the wall clock,
    so a round in which the thread waited for a core inflates whatever operator it hit)."""
    per = {c: [] for c in contexts}
    for _ in range(max(rounds, 1)):
        for c in contexts:
            avgs = []
            decode_times(m, cfg, c, steps, avgs)
            per[c].append({e.key: e.self_cpu_time_total / (steps - 4) for e in avgs[0]})
    table = {}
    for c in contexts:
        names = set().union(*per[c])
        table[c] = {k: min([r.get(k, 0.0) for r in per[c]]) for k in names}
    last = contexts[-1]
    names = sorted(set().union(*table.values()), key=lambda k: -table[last].get(k, 0.0))
    print(f"| {cfg['name']}: op, self CPU µs/step | " + " | ".join(f"context {c}" for c in contexts)
          + " |")
    print("|---|" + "---|" * len(contexts))
    for k in names[:14]:
        print(f"| {k} | " + " | ".join(f"{table[c].get(k, 0.0):.1f}" for c in contexts) + " |")
    print("| total (sum of the minimums) | "
          + " | ".join(f"{sum(table[c].values()):.1f}" for c in contexts) + " |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--contexts", default="32,512,2000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch._C._set_graph_executor_optimize(False)
    with open(os.path.join(args.model_dir, "model.json")) as f:
        cfg = json.load(f)
    m = torch.jit.load(os.path.join(args.model_dir, cfg["file"]))
    contexts = [int(c) for c in args.contexts.split(",")
                if int(c) + 32 < cfg["contextLength"]]
    if args.profile:
        profile_table(m, cfg, contexts, args.rounds)
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
