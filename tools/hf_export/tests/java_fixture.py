"""Writes the fixture of model-store's HfExportTest: a random Llama-shaped checkpoint (2 layers,
d=64, 4 query heads on 2 KV heads, llama3 rope scaling) exported by export_hf to
OUT/models/hf-llama-byte/, and OUT/expected.json: the packed steps of scenario.py (cache zero
filled, as DJL's newCache makes it) with the reference logits of every sequence in every step.

The model uses model.json's tokenizer 'byte' (vocabulary 300, eos 256): the Java side serves no
other tokenizer kind yet, and this test is about the logits, not the tokenizer.

    /usr/bin/python3 -m hf_export.tests.java_fixture OUT     (from tools/)
"""

import json
import os
import sys

import torch

from hf_export.convert import export
from hf_export.tests import reference, scenario

NAME = "hf-llama-byte"


def main(out: str) -> None:
    cfg = reference.llama_config(
        "llama", vocab=300, eos_token_id=256,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
    w = reference.random_weights(cfg, seed=21)
    src = os.path.join(out, "checkpoint")
    reference.write_checkpoint(src, cfg, w, "safetensors")
    info = export(src, os.path.join(out, "models", NAME), NAME, tokenizer="byte")
    steps = scenario.plan(300, seed=22)
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
                         "expected": full[s][done[s] + len(new) - 1].tolist()})
            done[s] += len(new)
        records.append(rows)
    # the same steps through the exported file here, so a mismatch on the Java side is DJL's
    module = torch.jit.load(os.path.join(out, "models", NAME, "model.pt"))
    _, got = scenario.run(module, steps, info["contextLength"], info["layers"], info["kvHeads"],
                          info["headDim"])
    worst = max((logits.double() - full[s][pos]).abs().max().item() for s, pos, logits in got)
    if worst >= 1e-4:
        raise SystemExit(f"python step differs from the reference by {worst}")
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"model": NAME, "slots": scenario.CACHE_SLOTS, "steps": records}, f)
    print(f"{NAME}: {len(records)} steps, python step vs reference max diff {worst:.2e}")


if __name__ == "__main__":
    main(sys.argv[1])
