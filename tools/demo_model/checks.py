"""Checks of the model contract, run on the scripted module and on the saved file before a
model is written: ``step`` (packed, KV-cached) generates exactly the greedy tokens of ``forward``
recomputation, and packing sequences of different lengths into one step gives the logits of
running each alone."""

from typing import List

import torch

from demo_model.model import new_cache


def greedy_forward(m, prompt: List[int], n: int) -> List[int]:
    ids = list(prompt)
    out = []
    for _ in range(n):
        logits = m.forward(torch.tensor([ids], dtype=torch.long))[0, -1]
        nxt = int(torch.argmax(logits).item())
        out.append(nxt)
        ids.append(nxt)
    return out


def greedy_step(m, prompt: List[int], n: int, slot: int = 1, slots: int = 3) -> List[int]:
    kc, vc = new_cache(m, slots)
    kc.normal_()  # stale garbage from a previous sequence must not matter
    vc.normal_()
    t = len(prompt)
    logits = m.step(torch.tensor(prompt), torch.full([t], slot, dtype=torch.long),
                    torch.arange(t), torch.tensor([t - 1]), kc, vc)
    out = []
    pos = t
    for _ in range(n):
        nxt = int(torch.argmax(logits[0]).item())
        out.append(nxt)
        logits = m.step(torch.tensor([nxt]), torch.tensor([slot]), torch.tensor([pos]),
                        torch.tensor([0]), kc, vc)
        pos += 1
    return out


def check_contract(m, corpus_sample: bytes):
    """Raises AssertionError when step() and forward() disagree."""
    with torch.no_grad():
        prompt = list(corpus_sample[:60])
        a = greedy_forward(m, prompt, 40)
        b = greedy_step(m, prompt, 40)
        assert a == b, "greedy step() %r != forward() %r" % (b, a)
        # packed: seq A prefill 7 tokens in slot 0, seq B decode 1 token in slot 2 (after a
        # 5-token prefill), seq C prefill 3 tokens in slot 1; compare with each alone.
        ta = list(corpus_sample[100:107])
        tb = list(corpus_sample[200:206])
        tc = list(corpus_sample[300:303])
        kc, vc = new_cache(m, 3)
        m.step(torch.tensor(tb[:5]), torch.full([5], 2, dtype=torch.long), torch.arange(5),
               torch.tensor([4]), kc, vc)
        toks = torch.tensor(ta + tb[5:] + tc)
        slots = torch.tensor([0] * 7 + [2] + [1] * 3)
        pos = torch.tensor(list(range(7)) + [5] + list(range(3)))
        packed = m.step(toks, slots, pos, torch.tensor([6, 7, 10]), kc, vc)
        ref = [m.forward(torch.tensor([s]))[0, -1] for s in (ta, tb, tc)]
        for i in range(3):
            diff = (packed[i] - ref[i]).abs().max().item()
            assert diff < 1e-4, "packed step row %d differs by %g" % (i, diff)
        # then all three decode one token together (slots in another order than the rows)
        nxt = [int(torch.argmax(packed[i]).item()) for i in range(3)]
        decoded = m.step(torch.tensor([nxt[2], nxt[0], nxt[1]]), torch.tensor([1, 0, 2]),
                         torch.tensor([3, 7, 6]), torch.tensor([0, 1, 2]), kc, vc)
        for row, (seq, i) in enumerate(((tc, 2), (ta, 0), (tb, 1))):
            ref_i = m.forward(torch.tensor([seq + [nxt[i]]]))[0, -1]
            diff = (decoded[row] - ref_i).abs().max().item()
            assert diff < 1e-4, "decode step row %d differs by %g" % (row, diff)
    return a
