"""Test helpers: random Hugging Face checkpoints in the files' own naming and layout, and an
eager reference forward written from the architectures' specifications, independently of
hf_export.model (it reads the checkpoint's tensors by their Hugging Face names, loops over
heads, and forms rotary angles per frequency in plain Python)."""

import json
import math
import os
from typing import Dict, List

import torch
from torch import Tensor

from hf_export import safetensors

D, LAYERS, HEADS, KV_HEADS, VOCAB, FFN = 64, 2, 4, 2, 1000, 128


def llama_config(model_type: str, vocab: int = VOCAB, **extra) -> dict:
    cfg = {"model_type": model_type, "hidden_size": D, "num_hidden_layers": LAYERS,
           "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
           "intermediate_size": FFN, "vocab_size": vocab, "max_position_embeddings": 128,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
           "tie_word_embeddings": False, "eos_token_id": 2}
    cfg.update(extra)
    return cfg


def gpt2_config() -> dict:
    return {"model_type": "gpt2", "n_embd": D, "n_layer": LAYERS, "n_head": HEADS,
            "n_positions": 128, "vocab_size": VOCAB, "layer_norm_epsilon": 1e-5,
            "activation_function": "gelu_new", "eos_token_id": 999}


def random_weights(cfg: dict, seed: int) -> Dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.15):
        return torch.randn(*shape, generator=g) * std

    def norm(n):
        return 1.0 + r(n, std=0.1)

    w: Dict[str, Tensor] = {}
    if cfg["model_type"] == "gpt2":
        v, d, c = cfg["vocab_size"], cfg["n_embd"], cfg["n_positions"]
        w["wte.weight"] = r(v, d, std=0.5)
        w["wpe.weight"] = r(c, d, std=0.5)
        for i in range(cfg["n_layer"]):
            p = f"h.{i}."
            w[p + "ln_1.weight"], w[p + "ln_1.bias"] = norm(d), r(d)
            w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"] = r(d, 3 * d), r(3 * d)
            w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"] = r(d, d), r(d)
            w[p + "ln_2.weight"], w[p + "ln_2.bias"] = norm(d), r(d)
            w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"] = r(d, 4 * d), r(4 * d)
            w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"] = r(4 * d, d), r(d)
            w[p + "attn.bias"] = torch.tril(torch.ones(1, 1, c, c))  # old checkpoints' mask
        w["ln_f.weight"], w["ln_f.bias"] = norm(d), r(d)
        return w
    v, d, h, kv = cfg["vocab_size"], cfg["hidden_size"], cfg["num_attention_heads"], \
        cfg["num_key_value_heads"]
    dh, f = d // h, cfg["intermediate_size"]
    w["model.embed_tokens.weight"] = r(v, d, std=0.5)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(d)
        w[p + "self_attn.q_proj.weight"] = r(h * dh, d)
        w[p + "self_attn.k_proj.weight"] = r(kv * dh, d)
        w[p + "self_attn.v_proj.weight"] = r(kv * dh, d)
        w[p + "self_attn.o_proj.weight"] = r(d, h * dh)
        if cfg["model_type"] == "qwen2":
            w[p + "self_attn.q_proj.bias"] = r(h * dh, std=0.5)
            w[p + "self_attn.k_proj.bias"] = r(kv * dh, std=0.5)
            w[p + "self_attn.v_proj.bias"] = r(kv * dh, std=0.5)
        w[p + "post_attention_layernorm.weight"] = norm(d)
        w[p + "mlp.gate_proj.weight"] = r(f, d)
        w[p + "mlp.up_proj.weight"] = r(f, d)
        w[p + "mlp.down_proj.weight"] = r(d, f)
    w["model.norm.weight"] = norm(d)
    if not cfg.get("tie_word_embeddings"):
        w["lm_head.weight"] = r(v, d)
    return w


def write_checkpoint(path: str, cfg: dict, w: Dict[str, Tensor], fmt: str,
                     tokenizer_config: dict = None, generation_config: dict = None) -> None:
    """fmt: 'safetensors', 'sharded' (3 safetensors shards + index) or 'bin'."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    if fmt == "safetensors":
        safetensors.save(os.path.join(path, "model.safetensors"), w)
    elif fmt == "sharded":
        names = list(w)
        shards = [names[i::3] for i in range(3)]
        weight_map = {}
        for i, part in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-00003.safetensors"
            safetensors.save(os.path.join(path, fname), {n: w[n] for n in part})
            weight_map.update({n: fname for n in part})
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)
    elif fmt == "bin":
        torch.save(w, os.path.join(path, "pytorch_model.bin"))
    else:
        raise ValueError(fmt)
    with open(os.path.join(path, "tokenizer.json"), "w") as f:
        json.dump({"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}, f)
    if tokenizer_config is not None:
        with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
            json.dump(tokenizer_config, f)
    if generation_config is not None:
        with open(os.path.join(path, "generation_config.json"), "w") as f:
            json.dump(generation_config, f)


# ---- the reference forward, float64 throughout ----

def _rms(x: Tensor, w: Tensor, eps: float) -> Tensor:
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def _layer_norm(x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _gelu_tanh(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _frequencies(cfg: dict, dh: int) -> List[float]:
    theta = cfg.get("rope_theta", 10000.0)
    out = []
    scaling = cfg.get("rope_scaling") or {}
    for i in range(dh // 2):
        f = theta ** (-2.0 * i / dh)
        if scaling.get("rope_type") == "llama3":
            old = scaling["original_max_position_embeddings"]
            lo, hi, fac = scaling["low_freq_factor"], scaling["high_freq_factor"], scaling["factor"]
            wavelength = 2 * math.pi / f
            if wavelength < old / hi:
                pass  # high frequency: unchanged
            elif wavelength > old / lo:
                f = f / fac  # low frequency: scaled
            else:
                s = (old / wavelength - lo) / (hi - lo)
                f = (1 - s) * f / fac + s * f
        out.append(f)
    return out


def _rotary(x: Tensor, freqs: List[float]) -> Tensor:
    """x: [T, Dh] of one head at positions 0..T-1; pairs (j, j + Dh/2) rotate by pos * f_j."""
    t, dh = x.shape
    angle = torch.arange(t, dtype=torch.float64).view(t, 1) * torch.tensor(freqs, dtype=torch.float64)
    c, s = torch.cos(angle), torch.sin(angle)
    a, b = x[:, :dh // 2], x[:, dh // 2:]
    return torch.cat([a * c - b * s, b * c + a * s], dim=1)


def _attention(q: List[Tensor], k: List[Tensor], v: List[Tensor]) -> Tensor:
    """Per query head: causal softmax(q k^T / sqrt(Dh)) v; query head i uses kv head
    i // (len(q) / len(k)). Returns [T, Hq * Dh]."""
    group = len(q) // len(k)
    outs = []
    for i, qi in enumerate(q):
        ki, vi = k[i // group], v[i // group]
        t, dh = qi.shape
        s = qi @ ki.T / math.sqrt(dh)
        s = s.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
        outs.append(torch.softmax(s, -1) @ vi)
    return torch.cat(outs, -1)


def reference_logits(cfg: dict, w: Dict[str, Tensor], tokens: List[int]) -> Tensor:
    """Logits [T, V] of one sequence at positions 0..T-1, in float64."""
    w = {k: v.double() for k, v in w.items()}
    ids = torch.tensor(tokens)
    t = len(tokens)
    if cfg["model_type"] == "gpt2":
        d, h, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
        dh = d // h
        x = w["wte.weight"][ids] + w["wpe.weight"][:t]
        for i in range(cfg["n_layer"]):
            p = f"h.{i}."
            a = _layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
            qkv = a @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # Conv1D: x W + b
            q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
            heads = lambda m: [m[:, j * dh:(j + 1) * dh] for j in range(h)]  # noqa: E731
            y = _attention(heads(q), heads(k), heads(v))
            x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
            m = _layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
            m = _gelu_tanh(m @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
            x = x + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        x = _layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps)
        return x @ w["wte.weight"].T
    d, h, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    dh, eps = d // h, cfg["rms_norm_eps"]
    freqs = _frequencies(cfg, dh)
    x = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."

        def proj(name, a):
            out = a @ w[p + name + ".weight"].T
            return out + w[p + name + ".bias"] if p + name + ".bias" in w else out

        a = _rms(x, w[p + "input_layernorm.weight"], eps)
        q, k, v = proj("self_attn.q_proj", a), proj("self_attn.k_proj", a), proj("self_attn.v_proj", a)
        qs = [_rotary(q[:, j * dh:(j + 1) * dh], freqs) for j in range(h)]
        ks = [_rotary(k[:, j * dh:(j + 1) * dh], freqs) for j in range(kv)]
        vs = [v[:, j * dh:(j + 1) * dh] for j in range(kv)]
        x = x + proj("self_attn.o_proj", _attention(qs, ks, vs))
        m = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        act = proj("mlp.gate_proj", m)
        x = x + proj("mlp.down_proj", act * torch.sigmoid(act) * proj("mlp.up_proj", m))
    x = _rms(x, w["model.norm.weight"], eps)
    head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    return x @ head.T
