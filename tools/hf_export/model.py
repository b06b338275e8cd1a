"""The exported model: one TorchScript-able decoder covering the Llama family (Llama, Mistral,
Qwen2) and GPT-2, written from the architectures' specifications, with the methods of the model
contract (model-store/README.md): ``forward`` (full recomputation) and the packed, KV-cached
``step`` with a ``[L, S, C, H, Dh]`` cache, H = key/value heads.

Per layer (pre-norm residual):
    x = x + Wo . attention(norm1(x))        (+ bo: GPT-2)
    x = x + mlp(norm2(x))
    norm:  RMSNorm w * x / sqrt(mean(x^2) + eps)    (Llama family, computed in float32)
           LayerNorm                                (GPT-2)
    mlp:   W2 (silu(W1 x) * W3 x)                   (SwiGLU, Llama family)
           W2 gelu_tanh(W1 x + b1) + b2             (GPT-2)
    positions: rotary on q and k (rotate-half pairing, d and d + Dh/2)   (Llama family)
               learned table added to the token embedding                 (GPT-2)
Grouped-query attention: query head i reads key/value head i // (Hq / Hkv). Absent biases are
zero tensors (adding zero is exact).
"""

import math
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def _param(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone(), requires_grad=False)


class Block(nn.Module):
    def __init__(self, w: dict, rms: bool, swiglu: bool, eps: float, n_heads: int, kv_heads: int,
                 head_dim: int):
        super().__init__()
        self.rms = rms
        self.swiglu = swiglu
        self.eps = eps
        self.n_heads = n_heads
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        for name in ["ln1_w", "ln1_b", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "ln2_w",
                     "ln2_b", "w1", "b1", "w3", "b3", "w2", "b2"]:
            setattr(self, name, _param(w[name]))

    def norm(self, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        if self.rms:
            xf = x.float()
            xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
            return w * xf.to(x.dtype)
        return F.layer_norm(x, [x.size(-1)], w, b, self.eps)

    def mlp(self, x: Tensor) -> Tensor:
        h = self.norm(x, self.ln2_w, self.ln2_b)
        if self.swiglu:
            a = F.silu(F.linear(h, self.w1, self.b1)) * F.linear(h, self.w3, self.b3)
        else:
            a = F.gelu(F.linear(h, self.w1, self.b1), approximate="tanh")
        return F.linear(a, self.w2, self.b2)

    def qkv(self, x: Tensor) -> List[Tensor]:
        h = self.norm(x, self.ln1_w, self.ln1_b)
        shape = x.shape[:-1]
        q = F.linear(h, self.wq, self.bq).view(shape + (self.n_heads, self.head_dim))
        k = F.linear(h, self.wk, self.bk).view(shape + (self.kv_heads, self.head_dim))
        v = F.linear(h, self.wv, self.bv).view(shape + (self.kv_heads, self.head_dim))
        return [q, k, v]

    def attend(self, q: Tensor, qpos: Tensor, keys: Tensor, vals: Tensor) -> Tensor:
        """q: [G, T, Hq, Dh] at positions qpos [G, T]; keys, vals: [G, P, Hkv, Dh] at positions
        0..P-1. Key positions > the query's are masked. Returns [G, T, Hq * Dh]."""
        g, t = q.size(0), q.size(1)
        p = keys.size(1)
        r = self.n_heads // self.kv_heads
        qg = q.reshape(g, t, self.kv_heads, r, self.head_dim).permute(0, 2, 1, 3, 4)
        qg = qg.reshape(g, self.kv_heads, t * r, self.head_dim)  # [G, Hkv, T*R, Dh]
        scores = torch.matmul(qg, keys.permute(0, 2, 3, 1)).float()  # [G, Hkv, T*R, P]
        scores = scores.view(g, self.kv_heads, t, r, p) * (1.0 / math.sqrt(self.head_dim))
        kpos = torch.arange(p, device=q.device)
        masked = kpos.view(1, 1, p) > qpos.unsqueeze(2)  # [G, T, P]
        scores = scores.masked_fill(masked.view(g, 1, t, 1, p), float("-inf"))
        att = torch.softmax(scores, dim=-1).to(vals.dtype).view(g, self.kv_heads, t * r, p)
        y = torch.matmul(att, vals.transpose(1, 2))  # [G, Hkv, T*R, Dh]
        y = y.view(g, self.kv_heads, t, r, self.head_dim).permute(0, 2, 1, 3, 4)
        return y.reshape(g, t, self.n_heads * self.head_dim)

    def attend_slot(self, q: Tensor, p0: int, keys: Tensor, vals: Tensor) -> Tensor:
        """One sequence's T queries q [T, Hq, Dh] at positions p0..p0+T-1 over keys, vals
        [P, Hkv, Dh] (P = p0 + T; views of the cache, used as they lie: the products read them
        through strides, nothing is gathered). Key positions > the query's are masked (only
        when T > 1: a single query is the last position). Returns [T, Hq * Dh]."""
        t = q.size(0)
        p = keys.size(0)
        r = self.n_heads // self.kv_heads
        qg = q.reshape(t, self.kv_heads, r, self.head_dim).permute(1, 0, 2, 3)
        qg = qg.reshape(self.kv_heads, t * r, self.head_dim)  # [Hkv, T*R, Dh] (copies q only)
        scores = torch.matmul(qg, keys.permute(1, 2, 0)).float()  # [Hkv, T*R, P]
        scores = scores * (1.0 / math.sqrt(self.head_dim))
        if t > 1:
            kpos = torch.arange(p, device=q.device)
            qpos = torch.arange(p0, p0 + t, device=q.device)
            masked = kpos.view(1, p) > qpos.view(t, 1)  # [T, P]
            scores = scores.view(self.kv_heads, t, r, p).masked_fill(
                masked.view(1, t, 1, p), float("-inf")).view(self.kv_heads, t * r, p)
        att = torch.softmax(scores, dim=-1).to(vals.dtype)
        y = torch.matmul(att, vals.transpose(0, 1))  # [Hkv, T*R, Dh]
        y = y.view(self.kv_heads, t, r, self.head_dim).permute(1, 0, 2, 3)
        return y.reshape(t, self.n_heads * self.head_dim)


class DecoderLM(nn.Module):
    def __init__(self, arch: str, weights: dict, layers: List[dict], vocab_size: int,
                 context_length: int, n_heads: int, kv_heads: int, head_dim: int, eps: float,
                 inv_freq: Tensor, tied: bool):
        super().__init__()
        self.arch = arch
        self.rope = arch != "gpt2"
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.n_layers = len(layers)
        self.n_heads = n_heads
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        self.eps = eps
        rms = arch != "gpt2"
        self.embed = _param(weights["embed"])
        self.pos_embed = _param(weights["pos_embed"])  # [C, D] for GPT-2, [0] otherwise
        self.lnf_w = _param(weights["lnf_w"])
        self.lnf_b = _param(weights["lnf_b"])
        # tied embeddings: one parameter under both names, stored once in model.pt
        self.lm_head = self.embed if tied else _param(weights["lm_head"])
        self.blocks = nn.ModuleList([Block(w, rms, rms, eps, n_heads, kv_heads, head_dim)
                                     for w in layers])
        # rotary tables [C, Dh/2], angles computed in float64
        pos = torch.arange(context_length, dtype=torch.float64)
        ang = pos.view(-1, 1) * inv_freq.to(torch.float64).view(1, -1)
        self.register_buffer("cos", torch.cos(ang).float())
        self.register_buffer("sin", torch.sin(ang).float())

    def rotate(self, x: Tensor, positions: Tensor) -> Tensor:
        """x: [..., H, Dh] at positions [...] -> rotary applied (rotate-half pairing)."""
        if not self.rope:
            return x
        cos = self.cos[positions].unsqueeze(-2)  # [..., 1, Dh/2]
        sin = self.sin[positions].unsqueeze(-2)
        half = self.head_dim // 2
        xf = x.float()
        x1 = xf[..., :half]
        x2 = xf[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)

    def final(self, x: Tensor) -> Tensor:
        if self.rope:
            xf = x.float()
            xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
            h = self.lnf_w * xf.to(x.dtype)
        else:
            h = F.layer_norm(x, [x.size(-1)], self.lnf_w, self.lnf_b, self.eps)
        return F.linear(h, self.lm_head).float()

    def embed_at(self, tokens: Tensor, positions: Tensor) -> Tensor:
        x = F.embedding(tokens, self.embed)
        if not self.rope:
            x = x + F.embedding(positions, self.pos_embed)
        return x

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, T] int64 -> logits [B, T, V] float32; positions 0..T-1, causal."""
        b, t = tokens.size(0), tokens.size(1)
        pos = torch.arange(t, device=tokens.device)
        qpos = pos.view(1, t).expand(b, t)
        x = self.embed_at(tokens, qpos)
        for blk in self.blocks:
            q, k, v = blk.qkv(x)
            q = self.rotate(q, qpos)
            k = self.rotate(k, qpos)
            x = x + F.linear(blk.attend(q, qpos, k, v), blk.wo, blk.bo)
            x = x + blk.mlp(x)
        return self.final(x)

    @torch.jit.export
    def step(self, tokens: Tensor, slots: Tensor, positions: Tensor, last_index: Tensor,
             k_cache: Tensor, v_cache: Tensor) -> Tensor:
        """Packed ragged step (model-store/README.md): N tokens of B sequences; sequence b owns
        tokens (last_index[b-1], last_index[b]]. k_cache, v_cache: [L, S, C, Hkv, Dh], written
        in place at [l, slot, position]. Returns [B, V] float32 logits of each last token.

        Attention reads the cache without copying it: each sequence attends over a view of its
        own slot, k_cache[l, slot, 0:p] with p its last position + 1 (the contract gives a
        sequence's tokens in one step consecutive positions, so the last is the largest). No
        gather of the [B, P, Hkv, Dh] prefix, no padding of ragged sequences: the per-sequence
        loop costs a few small operations per sequence and layer, where a gather copies
        2 * B * P * Hkv * Dh values per layer, which grows with the context."""
        b = last_index.size(0)
        ends: List[int] = (last_index + 1).tolist()
        seq_slot: List[int] = slots.index_select(0, last_index).tolist()
        seq_end_pos: List[int] = (positions.index_select(0, last_index) + 1).tolist()
        x = self.embed_at(tokens, positions)  # [N, D]
        layer = 0
        for blk in self.blocks:
            q, k, v = blk.qkv(x)  # [N, H, Dh]
            q = self.rotate(q, positions)
            k = self.rotate(k, positions)
            kc = k_cache[layer]
            vc = v_cache[layer]
            kc.index_put_((slots, positions), k)
            vc.index_put_((slots, positions), v)
            ys: List[Tensor] = []
            start = 0
            for i in range(b):
                t = ends[i] - start
                p = seq_end_pos[i]
                keys = kc.select(0, seq_slot[i]).narrow(0, 0, p)  # [P, Hkv, Dh], a view
                vals = vc.select(0, seq_slot[i]).narrow(0, 0, p)
                ys.append(blk.attend_slot(q.narrow(0, start, t), p - t, keys, vals))
                start = ends[i]
            y = ys[0] if b == 1 else torch.cat(ys)  # [N, Hq*Dh]
            x = x + F.linear(y, blk.wo, blk.bo)
            x = x + blk.mlp(x)
            layer += 1
        return self.final(x.index_select(0, last_index))
