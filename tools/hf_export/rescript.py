"""Re-exports a model directory written by export_hf (model.pt + export.json) with the current
model code, keeping its weights bit for bit: the TorchScript file holds the code of the version
of hf_export/model.py that wrote it, so a change to how ``step`` computes (not what) reaches a
bundled model only through this. Before replacing model.pt it runs the packed scenario of
tests/scenario.py (prefill of three sequences in a cache of stale values, 64 shuffled decode
steps, one mixed step) through the old and the new file and requires the logits to agree within
1e-5, and the parameters to be equal.

    /usr/bin/python3 -m hf_export.rescript MODEL_DIR        (from tools/)
"""

import json
import os
import sys

import torch

from .model import DecoderLM
from .tests import scenario

TOLERANCE = 1e-5


def rebuild(old, info: dict) -> DecoderLM:
    """A DecoderLM of the current code holding old's parameters and rotary tables."""
    state = {k: v.detach().clone() for k, v in old.state_dict().items()}
    n_layers = info["layers"]
    layers = []
    for i in range(n_layers):
        pre = f"blocks.{i}."
        layers.append({k[len(pre):]: v for k, v in state.items() if k.startswith(pre)})
    top = {k: state[k] for k in ("embed", "pos_embed", "lnf_w", "lnf_b", "lm_head")}
    head_dim = info["headDim"]
    model = DecoderLM(old.arch, top, layers, info["vocabSize"], info["contextLength"],
                      info["heads"], info["kvHeads"], head_dim, float(old.eps),
                      torch.zeros(head_dim // 2, dtype=torch.float64),
                      bool(info["tiedEmbeddings"]))
    with torch.no_grad():  # the tables as the old export computed them
        model.cos.copy_(state["cos"])
        model.sin.copy_(state["sin"])
    model.eval()
    return model


def main(model_dir: str) -> None:
    path = os.path.join(model_dir, "model.pt")
    with open(os.path.join(model_dir, "export.json")) as f:
        info = json.load(f)
    old = torch.jit.load(path)
    new = torch.jit.script(rebuild(old, info))
    a, b = old.state_dict(), new.state_dict()
    if sorted(a) != sorted(b) or any(not torch.equal(a[k], b[k]) for k in a):
        raise SystemExit(f"{path}: parameters differ after rebuilding")
    steps = scenario.plan(info["vocabSize"], seed=5)
    args = (info["contextLength"], info["layers"], info["kvHeads"], info["headDim"])
    _, got_old = scenario.run(old, steps, *args)
    _, got_new = scenario.run(new, steps, *args)
    worst = max((x[2] - y[2]).abs().max().item() for x, y in zip(got_old, got_new))
    if worst >= TOLERANCE:
        raise SystemExit(f"{path}: new step differs from the old by {worst}")
    tmp = path + ".new"
    new.save(tmp)
    os.replace(tmp, path)
    print(f"{path}: re-exported, {len(got_new)} step logits equal to the old file's within "
          f"{worst:.1e}, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python3 -m hf_export.rescript MODEL_DIR")
    main(sys.argv[1])
