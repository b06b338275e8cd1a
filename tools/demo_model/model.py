"""The demo model: a byte-level causal transformer with the methods of the model contract
(``forward`` and the packed, KV-cached ``step``; see model-store/README.md), written to be
scripted with TorchScript, and sampling from a scripted model."""

import math
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

VOCAB = 257  # 256 byte values + end-of-sequence
EOS = 256


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, head_dim: int):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.scale = 1.0 / math.sqrt(head_dim)
        # ALiBi (Press et al., 2022): a fixed per-head penalty proportional to the distance
        # between query and key, in addition to the learned position embeddings. It gives every
        # head a recency prior from the first step (a small model trained for minutes on a CPU
        # otherwise sits at the bigram loss for a long time) and keeps attention well behaved
        # at positions beyond the training windows. Geometric slopes 2^(-8i/H), i = 1..H.
        self.register_buffer("slopes", torch.tensor(
            [2.0 ** (-8.0 * (i + 1) / n_heads) for i in range(n_heads)], dtype=torch.float32))
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * n_heads * head_dim)
        self.proj = nn.Linear(n_heads * head_dim, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, 4 * d_model)
        self.fc2 = nn.Linear(4 * d_model, d_model)

    def mlp(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(self.ln2(x))))

    def forward(self, x: Tensor) -> Tensor:
        """Full causal self-attention over x: [B, T, D]."""
        b, t, _ = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, self.head_dim)
        q = qkv[:, :, 0].transpose(1, 2)  # [B, H, T, Dh]
        k = qkv[:, :, 1].transpose(1, 2)
        v = qkv[:, :, 2].transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scale  # [B, H, T, T]
        pos = torch.arange(t, device=x.device)
        dist = (pos.view(t, 1) - pos.view(1, t)).clamp(min=0).to(scores.dtype)  # [query, key]
        scores = scores - self.slopes.view(1, -1, 1, 1) * dist.view(1, 1, t, t)
        future = pos.view(1, t) > pos.view(t, 1)  # [query, key]
        scores = scores.masked_fill(future.view(1, 1, t, t), float("-inf"))
        att = torch.softmax(scores, dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        x = x + self.proj(y)
        return x + self.mlp(x)

    def attend_slot(self, q: Tensor, p0: int, keys: Tensor, vals: Tensor) -> Tensor:
        """One sequence's T queries q [T, H, Dh] at positions p0..p0+T-1 over keys, vals
        [P, H, Dh] (P = p0 + T): views of its cache slot, read through strides by the products,
        never gathered. Key position > query position is masked (only when T > 1: a single
        query is at the last position). Returns [T, H * Dh]."""
        t = q.size(0)
        p = keys.size(0)
        scores = torch.matmul(q.transpose(0, 1), keys.permute(1, 2, 0)) * self.scale  # [H, T, P]
        kpos = torch.arange(p, device=q.device)
        qpos = torch.arange(p0, p0 + t, device=q.device)
        dist = (qpos.view(t, 1) - kpos.view(1, p)).clamp(min=0).to(scores.dtype)  # [T, P]
        scores = scores - self.slopes.view(-1, 1, 1) * dist.unsqueeze(0)
        if t > 1:
            masked = kpos.view(1, p) > qpos.view(t, 1)  # [T, P]
            scores = scores.masked_fill(masked.unsqueeze(0), float("-inf"))
        att = torch.softmax(scores, dim=-1)
        y = torch.matmul(att, vals.transpose(0, 1))  # [H, T, Dh]
        return y.transpose(0, 1).reshape(t, self.n_heads * self.head_dim)

    def step(self, x: Tensor, slots: Tensor, positions: Tensor, kc: Tensor, vc: Tensor,
             ends: List[int], seq_slot: List[int], seq_end_pos: List[int]) -> Tensor:
        """Packed ragged step over x: [N, D]; writes k, v into kc/vc [S, C, H, Dh] in place.
        Sequence i owns rows [ends[i-1], ends[i]), slot seq_slot[i], and attends over a view
        of its slot's positions [0, seq_end_pos[i]) (no copy of the cached prefix)."""
        n = x.size(0)
        qkv = self.qkv(self.ln1(x)).view(n, 3, self.n_heads, self.head_dim)
        q = qkv[:, 0]
        k = qkv[:, 1]
        v = qkv[:, 2]
        kc.index_put_((slots, positions), k)
        vc.index_put_((slots, positions), v)
        ys: List[Tensor] = []
        start = 0
        for i in range(len(ends)):
            t = ends[i] - start
            p = seq_end_pos[i]
            keys = kc.select(0, seq_slot[i]).narrow(0, 0, p)  # [P, H, Dh], a view
            vals = vc.select(0, seq_slot[i]).narrow(0, 0, p)
            ys.append(self.attend_slot(q.narrow(0, start, t), p - t, keys, vals))
            start = ends[i]
        y = ys[0] if len(ys) == 1 else torch.cat(ys)
        x = x + self.proj(y)
        return x + self.mlp(x)


class ByteLM(nn.Module):
    def __init__(self, d_model: int, layers: int, head_dim: int, context: int):
        super().__init__()
        assert d_model % head_dim == 0
        self.vocab_size = VOCAB
        self.context_length = context
        self.n_layers = layers
        self.n_heads = d_model // head_dim
        self.head_dim = head_dim
        self.tok = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList([Block(d_model, self.n_heads, head_dim) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB, bias=False)
        self.apply(self._init)
        for blk in self.blocks:  # GPT-2 style scaled init of residual projections
            nn.init.normal_(blk.proj.weight, std=0.02 / math.sqrt(2 * layers))
            nn.init.normal_(blk.fc2.weight, std=0.02 / math.sqrt(2 * layers))
        # The position embeddings are learned, but start from sinusoids (std 0.02 like the token
        # embeddings): their dot products then already depend on relative offsets, so heads that
        # look at the previous few bytes are found in the first hundreds of steps instead of
        # thousands, which matters for a model trained for minutes on two cores.
        with torch.no_grad():
            pos = torch.arange(context, dtype=torch.float32).unsqueeze(1)
            freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                             * (-math.log(10000.0) / d_model))
            table = torch.zeros(context, d_model)
            table[:, 0::2] = torch.sin(pos * freq)
            table[:, 1::2] = torch.cos(pos * freq)
            self.pos.weight.copy_(table * (0.02 / table.std()))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: [B, T] int64 -> logits [B, T, V] float32; full causal recomputation."""
        return self.forward_at(tokens, 0)

    @torch.jit.export
    def forward_at(self, tokens: Tensor, offset: int) -> Tensor:
        """Like forward, with positions offset..offset+T-1 (training uses it to cover every
        learned position embedding with short windows)."""
        t = tokens.size(1)
        pos = torch.arange(offset, offset + t, device=tokens.device)
        x = self.tok(tokens) + self.pos(pos).unsqueeze(0)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))

    @torch.jit.export
    def step(self, tokens: Tensor, slots: Tensor, positions: Tensor, last_index: Tensor,
             k_cache: Tensor, v_cache: Tensor) -> Tensor:
        """Packed ragged step; see model-store/README.md.

        tokens, slots, positions: [N] int64; last_index: [B] int64 (strictly increasing, last
        is N-1: sequence b owns tokens (last_index[b-1], last_index[b]]); k_cache, v_cache:
        [L, S, C, H, Dh] float32, written in place at [l, slot, position]. Returns [B, V]
        float32: logits of each sequence's last token.
        """
        # sequence i owns tokens [ends[i-1], ends[i]); its tokens have consecutive positions,
        # so its last position is its largest
        ends: List[int] = (last_index + 1).tolist()
        seq_slot: List[int] = slots.index_select(0, last_index).tolist()
        seq_end_pos: List[int] = (positions.index_select(0, last_index) + 1).tolist()
        x = self.tok(tokens) + self.pos(positions)  # [N, D]
        layer = 0
        for blk in self.blocks:
            x = blk.step(x, slots, positions, k_cache[layer], v_cache[layer], ends, seq_slot,
                         seq_end_pos)
            layer += 1
        x = x.index_select(0, last_index)
        return self.head(self.ln_f(x))



def new_cache(m, slots: int):
    shape = [m.n_layers, slots, m.context_length, m.n_heads, m.head_dim]
    return torch.zeros(shape), torch.zeros(shape)


def sample_text(m, prompt: str, n: int, temperature: float, gen: torch.Generator) -> str:
    ids = list(prompt.encode("utf-8"))
    with torch.no_grad():
        kc, vc = new_cache(m, 1)
        t = len(ids)
        logits = m.step(torch.tensor(ids), torch.zeros(t, dtype=torch.long), torch.arange(t),
                        torch.tensor([t - 1]), kc, vc)
        out = []
        for i in range(n):
            if temperature <= 0:
                nxt = int(torch.argmax(logits[0]).item())
            else:
                probs = torch.softmax(logits[0] / temperature, dim=-1)
                nxt = int(torch.multinomial(probs, 1, generator=gen).item())
            if nxt == EOS or t + i + 1 >= m.context_length:
                break
            out.append(nxt)
            logits = m.step(torch.tensor([nxt]), torch.tensor([0]), torch.tensor([t + i]),
                            torch.tensor([0]), kc, vc)
    return bytes(out).decode("utf-8", errors="replace")
