"""The demo model: a byte-level causal transformer with the methods of the model contract
(``forward`` and the packed, KV-cached ``step``; see model-store/README.md), written to be
scripted with TorchScript, and sampling from a scripted model."""

import math

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

    def attend_cached(self, q: Tensor, qpos: Tensor, gslots: Tensor, kc: Tensor, vc: Tensor,
                      p: int) -> Tensor:
        """q: [G, T, H, Dh] queries of G sequences (padded to T), qpos: [G, T] their positions,
        gslots: [G] cache slots, kc/vc: [S, C, H, Dh]. Keys/values at positions [0, p) of each
        slot; key position > query position is masked. Returns [G, T, H, Dh]."""
        keys = kc.narrow(1, 0, p).index_select(0, gslots)  # [G, P, H, Dh]
        vals = vc.narrow(1, 0, p).index_select(0, gslots)
        scores = torch.matmul(q.transpose(1, 2), keys.permute(0, 2, 3, 1)) * self.scale
        kpos = torch.arange(p, device=q.device)
        dist = (qpos.unsqueeze(2) - kpos.view(1, 1, p)).clamp(min=0).to(scores.dtype)  # [G,T,P]
        scores = scores - self.slopes.view(1, -1, 1, 1) * dist.unsqueeze(1)
        masked = kpos.view(1, 1, p) > qpos.unsqueeze(2)  # [G, T, P]
        scores = scores.masked_fill(masked.unsqueeze(1), float("-inf"))  # [G, H, T, P]
        att = torch.softmax(scores, dim=-1)
        return torch.matmul(att, vals.transpose(1, 2)).transpose(1, 2)  # [G, T, H, Dh]

    def attend_decode(self, q: Tensor, qpos: Tensor, gslots: Tensor, kc: Tensor, vc: Tensor,
                      p: int) -> Tensor:
        """One query per sequence (decode). q: [G, H, Dh], qpos: [G], gslots: [G].

        The keys are gathered once as [G, P, H*Dh] and used as they lie: a block-diagonal query
        [G, H, H*Dh] makes one batched product give every head's scores, so the gathered keys
        and values are not copied a second time into a head-major layout. This step is memory
        bound; the extra multiplications by zero cost less than that copy. Returns [G, H, Dh]."""
        g = q.size(0)
        h = self.n_heads
        hd = h * self.head_dim
        keys = kc.narrow(1, 0, p).index_select(0, gslots).view(g, p, hd)  # [G, P, H*Dh]
        vals = vc.narrow(1, 0, p).index_select(0, gslots).view(g, p, hd)
        eye = torch.eye(h, dtype=q.dtype, device=q.device).view(1, h, h, 1)
        qb = (q.unsqueeze(1) * eye).reshape(g, h, hd)  # qb[g, i, j*Dh + d] = q[g, j, d] [i == j]
        scores = torch.bmm(qb, keys.transpose(1, 2)) * self.scale  # [G, H, P]
        kpos = torch.arange(p, device=q.device)
        dist = (qpos.view(g, 1) - kpos.view(1, p)).clamp(min=0).to(scores.dtype)  # [G, P]
        scores = scores - self.slopes.view(1, -1, 1) * dist.unsqueeze(1)
        masked = kpos.view(1, p) > qpos.view(g, 1)  # [G, P]
        scores = scores.masked_fill(masked.unsqueeze(1), float("-inf"))
        att = torch.softmax(scores, dim=-1)  # [G, H, P]
        out = torch.bmm(att, vals).view(g, h, h, self.head_dim)  # [G, H, H, Dh]: keep i == j
        return torch.diagonal(out, 0, 1, 2).transpose(1, 2)  # [G, H, Dh]

    def step(self, x: Tensor, slots: Tensor, positions: Tensor, kc: Tensor, vc: Tensor, p: int,
             single_idx: Tensor, single_pos: Tensor, single_slots: Tensor,
             multi_seq_slots: Tensor, multi_idx: Tensor, multi_row: Tensor, multi_col: Tensor,
             multi_t: int) -> Tensor:
        """Packed ragged step over x: [N, D]; writes k, v into kc/vc [S, C, H, Dh] in place."""
        n = x.size(0)
        qkv = self.qkv(self.ln1(x)).view(n, 3, self.n_heads, self.head_dim)
        q = qkv[:, 0]
        k = qkv[:, 1]
        v = qkv[:, 2]
        kc.index_put_((slots, positions), k)
        vc.index_put_((slots, positions), v)
        if multi_idx.numel() == 0:
            # decode only: every token is its own sequence, in order
            y = self.attend_decode(q, positions, slots, kc, vc, p)
            x = x + self.proj(y.reshape(n, self.n_heads * self.head_dim))
            return x + self.mlp(x)
        y = torch.empty_like(q)
        if single_idx.numel() > 0:
            # tokens that are alone in their sequence this step (decode): one row each
            out = self.attend_decode(q.index_select(0, single_idx), single_pos, single_slots,
                                     kc, vc, p)
            y.index_copy_(0, single_idx, out)
        if multi_idx.numel() > 0:
            # sequences with several tokens (prefill chunks): padded to the longest of them
            g = multi_seq_slots.size(0)
            qp = torch.zeros(g, multi_t, self.n_heads, self.head_dim, dtype=q.dtype,
                             device=q.device)
            qp.index_put_((multi_row, multi_col), q.index_select(0, multi_idx))
            pp = torch.full([g, multi_t], p - 1, dtype=torch.long, device=q.device)
            pp.index_put_((multi_row, multi_col), positions.index_select(0, multi_idx))
            out = self.attend_cached(qp, pp, multi_seq_slots, kc, vc, p)
            y.index_copy_(0, multi_idx, out[multi_row, multi_col])
        x = x + self.proj(y.reshape(n, self.n_heads * self.head_dim))
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
        n = tokens.size(0)
        b = last_index.size(0)
        dev = tokens.device
        p = int(positions.max().item()) + 1
        if n == b:
            # decode only (every sequence has one token): no structure to work out
            none = torch.zeros(0, dtype=torch.long, device=dev)
            single_idx = torch.arange(n, device=dev)
            single_pos = positions
            single_slots = slots
            multi_idx = none
            multi_row = none
            multi_col = none
            multi_seq_slots = none
            multi_t = 0
        else:
            # sequence structure: seq b owns tokens [starts[b], ends[b])
            ends = last_index + 1
            starts = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), ends[:-1]])
            lens = ends - starts
            seq_of = torch.repeat_interleave(torch.arange(b, device=dev), lens)  # [N]
            col = torch.arange(n, device=dev) - starts.index_select(0, seq_of)  # offset in seq
            token_len = lens.index_select(0, seq_of)
            single_idx = torch.nonzero(token_len == 1).view(-1)
            single_pos = positions.index_select(0, single_idx)
            single_slots = slots.index_select(0, single_idx)
            multi_idx = torch.nonzero(token_len > 1).view(-1)
            multi_seq = torch.nonzero(lens > 1).view(-1)
            multi_rank = torch.cumsum((lens > 1).to(torch.long), 0) - 1  # per seq
            multi_row = multi_rank.index_select(0, seq_of.index_select(0, multi_idx))
            multi_col = col.index_select(0, multi_idx)
            multi_seq_slots = slots.index_select(0, last_index.index_select(0, multi_seq))
            multi_t = int(lens.index_select(0, multi_seq).max().item())

        x = self.tok(tokens) + self.pos(positions)  # [N, D]
        layer = 0
        for blk in self.blocks:
            x = blk.step(x, slots, positions, k_cache[layer], v_cache[layer], p, single_idx,
                         single_pos, single_slots, multi_seq_slots, multi_idx, multi_row,
                         multi_col, multi_t)
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
