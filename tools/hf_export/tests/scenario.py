"""A packed decoding scenario for the contract's step: three sequences in slots 4, 1 and 2 of a
6-slot cache full of stale values, prefilled together in one step (lengths 7, 12 and 1), then
64 steps that each add one token to every sequence, packed in a different order each step; at
step 20 one sequence takes a 3-token chunk beside the others' single tokens (a mixed step)."""

import random
from typing import Dict, List, Tuple

import torch
from torch import Tensor

SLOTS = [4, 1, 2]
PROMPTS = [7, 12, 1]
DECODE_STEPS = 64
CACHE_SLOTS = 6


def plan(vocab: int, seed: int) -> List[List[Tuple[int, List[int]]]]:
    """Steps; each a list of (sequence index, new tokens) in packing order."""
    rnd = random.Random(seed)
    steps = [[(s, [rnd.randrange(vocab) for _ in range(n)]) for s, n in enumerate(PROMPTS)]]
    for i in range(DECODE_STEPS):
        order = list(range(len(SLOTS)))
        rnd.shuffle(order)
        steps.append([(s, [rnd.randrange(vocab) for _ in range(3 if (i == 20 and s == 1) else 1)])
                      for s in order])
    return steps


def run(module, steps, context: int, layers: int, kv_heads: int, head_dim: int,
        dtype=torch.float32, seed: int = 0):
    """Runs the steps through module.step; returns (full token lists per sequence, records of
    (sequence, position of its last token, logits [V]))."""
    g = torch.Generator().manual_seed(seed)
    shape = [layers, CACHE_SLOTS, context, kv_heads, head_dim]
    kc = torch.randn(shape, generator=g).to(dtype)  # stale contents must be masked
    vc = torch.randn(shape, generator=g).to(dtype)
    seqs: Dict[int, List[int]] = {s: [] for s in range(len(SLOTS))}
    records = []
    for step in steps:
        tokens, slots, positions, last = [], [], [], []
        for s, new in step:
            start = len(seqs[s])
            tokens += new
            slots += [SLOTS[s]] * len(new)
            positions += list(range(start, start + len(new)))
            last.append(len(tokens) - 1)
        with torch.no_grad():
            logits = module.step(torch.tensor(tokens), torch.tensor(slots),
                                 torch.tensor(positions), torch.tensor(last), kc, vc)
        for b, (s, new) in enumerate(step):
            seqs[s] += new
            records.append((s, len(seqs[s]) - 1, logits[b]))
    return seqs, records
