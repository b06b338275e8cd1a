"""Writes the fixture of model-store's DtypeTest: one random Llama-shaped checkpoint (java_fixture's
shape: 2 layers, d=64, 4 query heads on 2 KV heads; vocabulary 300, tokenizer 'byte') exported
by export_hf in float32, bfloat16 and float16 to OUT/models/hf-llama-{f32,bf16,f16}/, and
OUT/expected.json: for scenario.py's packed steps, the float64 reference logits of every sequence
in every step, and the logits python's torch gives for the same steps through each exported file
(or, where python's CPU torch cannot run a dtype, the error it gives).

    /usr/bin/python3 -m hf_export.tests.dtype_fixture OUT     (from tools/)
"""

import json
import os
import sys

import torch

from hf_export.convert import export
from hf_export.tests import reference, scenario

DTYPES = {"float32": "hf-llama-f32", "bfloat16": "hf-llama-bf16", "float16": "hf-llama-f16"}


def main(out: str) -> None:
    cfg = reference.llama_config("llama", vocab=300, eos_token_id=256)
    w = reference.random_weights(cfg, seed=31)
    src = os.path.join(out, "checkpoint")
    reference.write_checkpoint(src, cfg, w, "safetensors")
    steps = scenario.plan(300, seed=32)
    seqs = {s: [] for s in range(len(scenario.SLOTS))}
    for step in steps:
        for s, new in step:
            seqs[s] += new
    full = {s: reference.reference_logits(cfg, w, toks) for s, toks in seqs.items()}
    done = {s: 0 for s in seqs}
    records = []
    for step in steps:
        rows = []
        for s, new in step:
            rows.append({"slot": scenario.SLOTS[s], "tokens": new, "position": done[s],
                         "sequence": s, "last": done[s] + len(new) - 1,
                         "expected": full[s][done[s] + len(new) - 1].tolist()})
            done[s] += len(new)
        records.append(rows)
    python = {}
    for dtype, name in DTYPES.items():
        info = export(src, os.path.join(out, "models", name), name, dtype=dtype,
                      tokenizer="byte")
        module = torch.jit.load(os.path.join(out, "models", name, "model.pt"))
        try:
            _, got = scenario.run(module, steps, info["contextLength"], info["layers"],
                                  info["kvHeads"], info["headDim"], dtype=getattr(torch, dtype))
        except RuntimeError as e:  # float16 on a CPU torch without half matmul
            python[dtype] = {"error": str(e).strip().splitlines()[-1]}
            print(f"{name}: python's torch cannot run it on the CPU: {python[dtype]['error']}")
            continue
        worst = max((logits.double() - full[s][pos]).abs().max().item() for s, pos, logits in got)
        python[dtype] = {"maxDiffToReference": worst,
                         "logits": [[round(x, 6) for x in logits.tolist()] for _, _, logits in got]}
        print(f"{name}: python step vs float64 reference max diff {worst:.2e}")
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"models": DTYPES, "slots": scenario.CACHE_SLOTS, "steps": records,
                   "python": python}, f)


if __name__ == "__main__":
    main(sys.argv[1])
