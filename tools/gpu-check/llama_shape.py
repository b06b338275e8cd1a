"""Check 8 (issue 13 item 8): a random-weight model of a realistic shape (by default Llama 3.2
1B's: 1.24B parameters), exported by tools/hf_export in bf16, then decode tokens/s at batch 1 and
32 through the exported TorchScript ``step`` (the file DJL loads) against PyTorch eager (the same
module unscripted) on the same device. Prints RESULT lines for run.sh and table.py.

    python3 tools/gpu-check/llama_shape.py --out DIR [--preset llama-1b] [--dtype bfloat16]
        [--device cuda:0] [--batches 1,32] [--steps 32] [--prompt 16] [--layers N]

DJL's side (the server's path) is run.sh's next check, ``ModelDecode`` on the directory this
script leaves with ``--keep`` (ModelConfigs serves float16 and bfloat16 models). The CPU build's test (tools/hf_export/tests/test_llama_shape.py) runs this script
on the CPU with the tiny preset, so only the CUDA numbers are new on the GPU machine.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hf_export import random_model  # noqa: E402
from hf_export.convert import build  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def tokens_per_s(module, info: dict, batch: int, steps: int, prompt: int, device: str,
                 dtype) -> float:
    """Prefill `batch` prompts of `prompt` tokens in one packed step, then time `steps` decode
    steps of the whole batch (greedy, argmax on the device)."""
    shape = [info["layers"], batch, prompt + steps + 1, info["kvHeads"], info["headDim"]]
    kc = torch.zeros(shape, dtype=dtype, device=device)
    vc = torch.zeros(shape, dtype=dtype, device=device)
    g = torch.Generator().manual_seed(batch)
    tokens = torch.randint(0, 256, (batch * prompt,), generator=g).to(device)
    slots = torch.arange(batch, device=device).repeat_interleave(prompt)
    positions = torch.arange(prompt, device=device).repeat(batch)
    last = torch.arange(1, batch + 1, device=device) * prompt - 1
    with torch.no_grad():
        logits = module.step(tokens, slots, positions, last, kc, vc)
        nxt = logits.argmax(-1)
        seq_slots = torch.arange(batch, device=device)
        seq_last = torch.arange(batch, device=device)
        sync(device)
        t0 = time.perf_counter()
        for s in range(steps):
            pos = torch.full((batch,), prompt + s, dtype=torch.long, device=device)
            logits = module.step(nxt, seq_slots, pos, seq_last, kc, vc)
            nxt = logits.argmax(-1)
        sync(device)
        return batch * steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the exported model (removed after)")
    ap.add_argument("--preset", default="llama-1b")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--layers", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the exported model")
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    model_dir = os.path.join(args.out, args.preset)
    ckpt = tempfile.mkdtemp(prefix="llama-shape-checkpoint-")
    try:
        t0 = time.perf_counter()
        export_args = [args.preset, model_dir, "--dtype", args.dtype, "--keep-checkpoint", ckpt]
        if args.layers:
            export_args += ["--layers", str(args.layers)]
        info = random_model.main(export_args)
        export_s = time.perf_counter() - t0
        print(f"RESULT check=llama-export status=OK preset={args.preset} dtype={args.dtype}"
              f" params={info['parameters']} context={info['contextLength']}"
              f" export_s={export_s:.1f}"
              f" bytes={os.path.getsize(os.path.join(model_dir, 'model.pt'))}", flush=True)
        scripted = torch.jit.load(os.path.join(model_dir, "model.pt"), map_location=args.device)
        eager, _ = build(ckpt, args.dtype)
        eager = eager.to(args.device)
        for b in [int(x) for x in args.batches.split(",")]:
            # side by side, alternating, twice each; the better of the two (warm-up included)
            best = {"torchscript": 0.0, "eager": 0.0}
            for _ in range(2):
                for name, module in (("torchscript", scripted), ("eager", eager)):
                    best[name] = max(best[name], tokens_per_s(
                        module, info, b, args.steps, args.prompt, args.device, dtype))
            print(f"RESULT check=llama-decode status=OK batch={b} device={args.device}"
                  f" torchscript_tok_s={best['torchscript']:.1f} eager_tok_s={best['eager']:.1f}"
                  f" ratio={best['torchscript'] / best['eager']:.3f}", flush=True)
        return 0
    finally:
        shutil.rmtree(ckpt, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(model_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
